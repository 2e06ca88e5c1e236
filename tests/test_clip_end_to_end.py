"""CLIP through every verb on real data, shrunk to seconds: pairs made from the installed
Adwaita icon theme (`fmctl data icons`), `fmctl pretrain` of a tiny two-tower model,
`fmctl finetune` from that run with the sigmoid loss, `fmctl eval` (retrieval and
zero-shot), `fmctl export --format onnx` (two graphs, each parity-checked) and `fmctl
predict` from the run folder and from the export (zero-shot, retrieval, embeddings),
which must agree. The budget's figures are in tests/test_clip_evidence.py (slow)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from fmctl.errors import DataError
from tests.helpers import REPO, compose, read_jsonl, run_cli

TINY_CLIP = ["backbone.embed_dim=32", "backbone.image.hidden_size=32", "backbone.image.num_layers=1",
             "backbone.image.num_heads=2", "backbone.image.image_size=16", "backbone.text.hidden_size=32",
             "backbone.text.num_layers=1", "backbone.text.num_heads=2", "backbone.text.vocab_size=300",
             "trainer.progress=off", "trainer.precision=fp32", "trainer.num_threads=1", "trainer.log_every=1000"]


def quiet(_line):
    pass


@pytest.fixture(scope="module")
def icons(tmp_path_factory):
    from fmctl.data.icons import IconsConfig, make_icons

    out = tmp_path_factory.mktemp("icons") / "pairs"
    report = make_icons(IconsConfig(out=str(out), size=16))
    return out, report


@pytest.fixture(scope="module")
def trained(icons, tmp_path_factory):
    from rich.console import Console

    from fmctl import pipeline

    out, _ = icons
    raw, run = compose("clip_icons", [f"data.train={out}/train.csv", f"data.validation={out}/validation.csv",
                                      f"data.test={out}/test.csv", f"task.zero_shot={out}/zero_shot", *TINY_CLIP,
                                      "trainer.max_steps=30", "trainer.eval_every=15", "trainer.batch_size=32",
                                      "optim.lr=2e-3"], tmp_path_factory.mktemp("clip") / "run")
    return pipeline.pretrain(run, raw, console=Console(file=open("/dev/null", "w")))


def test_icon_pairs_are_split_by_concept_with_captions_from_names(icons):
    out, report = icons
    rows = {split: list(csv_rows(out / f"{split}.csv")) for split in ("train", "validation", "test")}
    concepts = {split: {r["concept"] for r in split_rows} for split, split_rows in rows.items()}
    assert not concepts["train"] & concepts["test"] and not concepts["train"] & concepts["validation"]
    assert not {r["caption"] for r in rows["train"]} & {r["caption"] for r in rows["test"]}
    assert report["pairs"]["train"] > 600 and report["pairs"]["test"] > 60
    every = [r for split_rows in rows.values() for r in split_rows]
    by_image = {r["image"].split("/", 2)[2]: r["caption"] for r in every}   # images/<size>/<context>/<file>
    assert by_image["status/audio-volume-high-symbolic.symbolic.png"] == "a status icon: audio volume high"
    assert by_image["legacy/audio-volume-high.png"] == "a colour status icon: audio volume high"
    assert by_image["mimetypes/x-office-document-symbolic.symbolic.png"] == "a file type icon: office document"
    assert all((out / r["image"]).is_file() for r in every)
    sizes = {split: {r["image"].split("/")[1] for r in split_rows} for split, split_rows in rows.items()}
    assert {"16x16", "24x24", "32x32", "48x48"} <= sizes["train"]       # every size the theme draws, as views
    assert "16x16" in sizes["test"] and len({r["image"].split("/", 2)[2] for r in rows["test"]}) == len(rows["test"])
    assert sum(1 for _ in (out / "zero_shot").rglob("*.png")) == sum(report["zero_shot_classes"].values())
    families = {r["concept"].split("-")[0] for r in rows["test"]}     # zero-shot classes: name families
    assert set(report["zero_shot_classes"]) <= families and min(report["zero_shot_classes"].values()) >= 3
    assert len(report["zero_shot_classes"]) >= 5
    assert len(every) > len({r["caption"] for r in every})   # mirrored variants repeat their caption


def csv_rows(path):
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        yield from csv.DictReader(handle)


def test_pretrain_reports_retrieval_and_eval_adds_zero_shot(trained):
    from fmctl.config.saved_runs import load_run_config
    from fmctl import pipeline
    from rich.console import Console

    metrics = trained.metrics
    history = [h for h in trained.fit.history if "val/loss" in h]
    assert history[-1]["val/loss"] < history[0]["val/loss"]
    assert {"test/i2t_r10", "test/t2i_r10", "test/i2t_median_rank", "test/recall_sum"} <= set(metrics)
    assert metrics["test/recall_sum"] == pytest.approx(sum(metrics[f"test/{d}_r{k}"] for d in ("i2t", "t2i")
                                                           for k in (1, 5, 10)))
    _, run = load_run_config(trained.run_dir, [])
    report = pipeline.evaluate_run(trained.run_dir, run, console=Console(file=open("/dev/null", "w")))
    assert report["i2t_r10"] == pytest.approx(metrics["test/i2t_r10"], abs=1e-6)
    assert report["chance_i2t_r10"] == pytest.approx(10 / report["num_captions"])
    zero_shot = json.loads((trained.run_dir / "eval" / "zero_shot" / "metrics.json").read_text())
    assert {"accuracy", "macro_f1", "top5_accuracy", "per_class", "confusion_matrix"} <= set(zero_shot)
    assert (trained.run_dir / "eval" / "zero_shot" / "confusion_matrix.png").is_file()
    first = read_jsonl(trained.run_dir / "eval" / "predictions.jsonl")[0]
    assert set(first) == {"image", "caption", "caption_rank", "retrieved"} and len(first["retrieved"]) == 5
    manifest = json.loads((trained.run_dir / "manifest.json").read_text())
    assert manifest["verb"] == "pretrain" and manifest["backbone"] == "clip"


def test_finetune_continues_a_clip_run_with_the_sigmoid_loss(trained, icons, tmp_path):
    from rich.console import Console

    from fmctl import pipeline

    out, _ = icons
    raw, run = compose("clip_icons", [f"data.train={out}/train.csv", f"data.validation={out}/validation.csv",
                                      "data.test=null", f"backbone.pretrained={trained.run_dir}", "task.loss=siglip",
                                      "task.lock=image",
                                      *TINY_CLIP, "trainer.max_steps=4", "trainer.batch_size=32"], tmp_path / "ft")
    result = pipeline.finetune(run, raw, console=Console(file=open("/dev/null", "w")))
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["verb"] == "finetune" and manifest["lineage"][0]["verb"] == "pretrain"
    from safetensors.numpy import load_file

    own = load_file(str(result.run_dir / "model" / "projections.safetensors"))
    assert "logit_bias" in own and -10.1 < float(own["logit_bias"]) < -9.9   # SigLIP's bias, a few steps in
    before = load_file(str(trained.run_dir / "model" / "image" / "model.safetensors"))
    after = load_file(str(result.run_dir / "model" / "image" / "model.safetensors"))
    assert all(np.array_equal(before[k], after[k]) for k in before)          # the locked image tower


@pytest.fixture(scope="module")
def exported(trained):
    from fmctl.export.run import export_run
    from fmctl.export.writers import ExportOptions

    return export_run(trained.run_dir, ExportOptions(fmt="onnx"), log=quiet)


def test_onnx_export_writes_two_checked_encoders(exported):
    manifest = exported.manifest
    assert manifest["files"] == {"image_encoder": "image_encoder.onnx", "text_encoder": "text_encoder.onnx"}
    for graph in ("image_encoder", "text_encoder"):
        parity = manifest["graphs"][graph]["parity"]
        assert parity["passed"] and parity["max_abs_diff"] <= 1e-4 and parity["label_agreement"] == 1.0
        assert parity["figures"]["min_cosine"] >= 0.999 and parity["figures"]["top5_overlap"] == 1.0
        assert (exported.folder / f"{graph}.onnx").is_file()
        accuracy = manifest["graphs"][graph]["evaluation"]["accuracy"]
        assert accuracy["onnx_fp32"] == accuracy["pytorch_fp32"]
    assert manifest["graphs"]["image_encoder"]["onnx"]["exporter"] == "dynamo"
    assert manifest["graphs"]["text_encoder"]["inputs"][0]["name"] == "input_ids"
    assert manifest["postprocessing"]["kind"] == "two_tower" and manifest["postprocessing"]["templates"]


def test_run_folder_and_export_predict_alike(trained, exported, icons, tmp_path):
    from fmctl.predict.run import predict

    out, report = icons
    images = out / "zero_shot" / max(report["zero_shot_classes"], key=report["zero_shot_classes"].get)
    got = {}
    for name, target in (("run", trained.run_dir), ("onnx", exported.folder)):
        predict(target, images=images, labels="status,action,device", out=tmp_path / f"{name}_zs.jsonl", log=quiet)
        predict(target, images=out / "zero_shot", text="a status icon: battery full", top_k=5,
                out=tmp_path / f"{name}_search.jsonl", log=quiet)
        predict(target, images=images, embed=True, out=tmp_path / f"{name}_embed.jsonl", log=quiet)
        got[name] = [read_jsonl(tmp_path / f"{name}_{kind}.jsonl") for kind in ("zs", "search", "embed")]
    (zs_run, search_run, embed_run), (zs_onnx, search_onnx, embed_onnx) = got["run"], got["onnx"]
    assert len(zs_run) == len(list(images.iterdir())) and set(zs_run[0]) == {"row", "image", "label", "probabilities"}
    assert [r["label"] for r in zs_run] == [r["label"] for r in zs_onnx]
    assert sum(zs_run[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    for a, b in zip(zs_run, zs_onnx):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-4)
    assert [r["rank"] for r in search_run] == [1, 2, 3, 4, 5]
    assert [r["image"] for r in search_run] == [r["image"] for r in search_onnx]
    assert search_run[0]["score"] >= search_run[-1]["score"]
    run_vectors, onnx_vectors = (np.array([r["embedding"] for r in rows]) for rows in (embed_run, embed_onnx))
    assert np.allclose(np.linalg.norm(run_vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(run_vectors, onnx_vectors, atol=1e-4)


def test_onnx_two_tower_predict_never_imports_torch(exported, icons, tmp_path):
    out, report = icons
    folder = out / "zero_shot" / max(report["zero_shot_classes"], key=report["zero_shot_classes"].get)
    code = ("import sys\nfrom pathlib import Path\nfrom fmctl.predict.run import predict\n"
            f"predict(Path({str(exported.folder)!r}), images=Path({str(folder)!r}), "
            f"labels='device,status', out=Path({str(tmp_path / 'zs.jsonl')!r}), log=lambda _l: None)\n"
            "print([m for m in ('torch', 'transformers', 'timm') if m in sys.modules])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert len(read_jsonl(tmp_path / "zs.jsonl")) == len(list(folder.iterdir()))


def test_bad_predict_input_is_one_line(trained, icons, tmp_path):
    from fmctl.predict.run import predict

    out, _ = icons
    with pytest.raises(DataError) as caught:
        predict(trained.run_dir, images=out / "zero_shot", labels="status", log=quiet)
    assert str(caught.value) == ("--labels: zero-shot classification chooses between at least two labels, got 1 "
                                 "('status'); give them comma-separated, e.g. --labels \"cat,dog\"")
    with pytest.raises(DataError, match=r"is a two-tower \(contrastive\) model; give --images DIR --labels"):
        predict(trained.run_dir, images=out / "zero_shot", log=quiet)
    done = run_cli(["predict", str(trained.run_dir), "--images", str(out / "zero_shot"), "--labels", "status,action",
                    "--embed"], cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == (
        "error: --embed: give --images DIR or --text/--input (one of them), without --labels")


def test_labels_on_a_model_that_is_not_two_tower_is_refused(tiny_bert_run, tmp_path):
    from fmctl.predict.run import predict

    with pytest.raises(DataError) as caught:
        predict(tiny_bert_run, images=tmp_path, labels="a,b", log=quiet)
    assert str(caught.value) == (f"--labels: {tiny_bert_run} is a text_classification model; --labels needs a "
                                 f"two-tower (contrastive) model's run or export folder")


def test_probe_reads_one_tower_of_a_clip_run(trained, icons, tmp_path):
    """`fmctl probe CLIP_RUN tower=image` embeds labelled images with the image tower alone
    (its features before the projection); without tower= the source asks for one."""
    import io as text_io

    from rich.console import Console

    from fmctl.errors import ConfigError
    from fmctl.probe.run import probe

    out, _ = icons
    quiet_console = Console(file=text_io.StringIO())
    words = [f"data.train={out}/zero_shot", "progress=off", f"out={tmp_path / 'probe'}"]
    result = probe(str(trained.run_dir), [*words, "tower=image"], console=quiet_console)
    assert result["modality"] == "image" and result["feature_width"] == 32    # backbone.image.hidden_size
    assert sum(result["examples"].values()) == sum(1 for p in (out / "zero_shot").rglob("*.png"))
    assert 0.0 <= result["linear"]["validation_accuracy"] <= 1.0
    with pytest.raises(ConfigError, match="choose tower=image or tower=text"):
        probe(str(trained.run_dir), words, console=quiet_console)
