"""task=semantic_segmentation: the metrics against a confusion matrix counted by hand, the
image+mask reader's one-line errors, one geometry for an image and its mask, and a tiny
CvT trained on real icon composites, evaluated (per-class table, overlays), exported to
ONNX with pixel-label parity and served as mask PNGs."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fmctl.data.icon_scenes import THEME
from fmctl.errors import ConfigError, DataError
from tests.helpers import compose, finetune, read_jsonl

needs_icons = pytest.mark.skipif(not (THEME / "48x48").is_dir(), reason="needs the adwaita-icon-theme package")
TINY_SEG = ["backbone.embed_dims=[32,64,96]", "backbone.num_heads=[1,2,2]", "backbone.image_size=32",
            "task.decoder_dim=32", "trainer.progress=off", "trainer.num_threads=1"]


def test_metrics_match_a_confusion_matrix_counted_by_hand_with_an_ignored_label():
    from fmctl.evaluate.segmentation import SegmentationMetrics

    labels = torch.tensor([[[0, 0, 1], [2, 255, 1]], [[1, 1, 255], [0, 2, 2]]])
    preds = torch.tensor([[[0, 1, 1], [2, 2, 0]], [[1, 1, 0], [0, 0, 2]]])
    logits = torch.nn.functional.one_hot(preds, 3).permute(0, 3, 1, 2).float()
    metrics = SegmentationMetrics(["bg", "a", "b"], ignore_index=255)
    metrics.update(logits, {"labels": labels}, torch.tensor(0.5))
    # counted by hand over the 10 pixels that are not 255 (rows: true, columns: predicted)
    by_hand = [[2, 1, 0],    # true bg: bg, a(0,1) ; second image's bg -> bg
               [1, 3, 0],    # true a: a, a(1,2) wrongly bg ; a, a
               [1, 0, 2]]    # true b: b ; b wrongly bg, b
    assert metrics.matrix.tolist() == by_hand
    ious = [2 / (3 + 4 - 2), 3 / (4 + 4 - 3), 2 / (3 + 2 - 2)]
    report = metrics.report()
    assert report["mean_iou"] == pytest.approx(sum(ious) / 3)
    assert [report["per_class"][n]["iou"] for n in ("bg", "a", "b")] == pytest.approx(ious)
    assert report["pixel_accuracy"] == pytest.approx(7 / 10) and report["loss"] == pytest.approx(0.5)
    # a class in neither the labels nor the predictions is left out of the mean, not counted as 0
    absent = SegmentationMetrics(["bg", "a", "b", "never"], ignore_index=255)
    absent.update(torch.cat([logits, torch.zeros(2, 1, 2, 3)], 1), {"labels": labels}, None)
    assert absent.compute()["mean_iou"] == pytest.approx(sum(ious) / 3)
    assert absent.report()["per_class"]["never"]["iou"] is None


def _pair(root: Path, stem: str, mask: np.ndarray, size: tuple[int, int] | None = None, mode: str = "L") -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    height, width = mask.shape
    Image.new("RGB", size or (width, height), (90, 120, 30)).save(root / "images" / f"{stem}.jpg")
    Image.fromarray(mask.astype(np.uint8)).convert(mode).save(root / "masks" / f"{stem}.png")


def _read(root: Path, names=("bg", "leaf")):
    from fmctl.data.masks import check_masks, scan_mask_folders

    rows = scan_mask_folders(root)
    check_masks(rows, list(names), 255)
    return rows


def test_bad_pairs_are_one_line_that_names_the_files(tmp_path):
    good = np.zeros((8, 10), dtype=np.uint8)
    good[2:5, 3:7] = 1
    good[0, 0] = 255
    _pair(tmp_path / "ok", "a", good)
    assert [r.mask.name for r in _read(tmp_path / "ok")] == ["a.png"]
    _pair(tmp_path / "size", "a", good, size=(12, 8))
    with pytest.raises(DataError, match=r"^\S+/size/masks/a.png: mask is 10x8 pixels but its image \S+/size/images/"
                                        r"a.jpg is 12x8; a mask must cover its image pixel for pixel$"):
        _read(tmp_path / "size")
    bad = good.copy()
    bad[7, 9] = 7
    _pair(tmp_path / "value", "a", bad)
    with pytest.raises(DataError, match=r"^\S+/value/masks/a.png: value 7 is neither a class \(0-1: bg, leaf\) nor "
                                        r"data.ignore_index \(255\)$"):
        _read(tmp_path / "value")
    _pair(tmp_path / "missing", "a", good)
    Image.new("RGB", (10, 8)).save(tmp_path / "missing" / "images" / "b.png")
    with pytest.raises(DataError, match=r"^\S+/missing/images/b.png: no mask with its stem in \S+/missing/masks "
                                        r"\(expected \S+/missing/masks/b.png\)$"):
        _read(tmp_path / "missing")
    _pair(tmp_path / "colour", "a", good, mode="RGB")
    with pytest.raises(DataError, match=r"a.png: a mask must hold one class index per pixel .* got mode RGB"):
        _read(tmp_path / "colour")


def test_label_names_come_from_the_config_a_file_or_labels_txt(tmp_path):
    with pytest.raises(ConfigError) as caught:
        compose("segment_folder", [f"data.train={tmp_path}", "data.label_names=[bg,leaf]", "data.ignore_index=1",
                                   f"data.labels_file={tmp_path / 'x.txt'}"])
    assert caught.value.lines() == [
        "data.labels_file: give the class names once, as data.label_names or data.labels_file",
        "data.ignore_index: 1 is also a class index (data.label_names has 2 classes); choose a value no class "
        "uses, such as 255"]
    from fmctl.data.masks import label_names

    _, run = compose("segment_folder", [f"data.train={tmp_path}"])
    with pytest.raises(DataError, match="data.label_names: segmentation needs its class names"):
        label_names(run.data, tmp_path)
    (tmp_path / "labels.txt").write_text("background\nleaf\n\n", encoding="utf-8")
    assert label_names(run.data, tmp_path) == ["background", "leaf"]


def test_an_image_and_its_mask_share_every_crop_and_flip(tmp_path):
    """Colour encodes the class: after augmentation each mask pixel still sits on its colour."""
    from fmctl.data.masks import scan_mask_folders
    from fmctl.data.segmentation import SegmentationDataset

    mask = np.zeros((48, 64), dtype=np.uint8)
    mask[:, 20:40] = 1
    mask[10:30, 45:60] = 2
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], dtype=np.uint8)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(colours[mask]).save(tmp_path / "images" / "a.png")
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")
    dataset = SegmentationDataset(scan_mask_folders(tmp_path) * 8, seed=7)
    prep = {"image_size": 32, "in_chans": 3, "mean": [0.0] * 3, "std": [1.0] * 3, "crop_pct": 0.9,
            "crop_mode": "center", "interpolation": "bilinear"}
    dataset.configure(prep, augment=True)
    first_epoch = []
    for index in range(8):
        item = dataset[index]
        pixels, labels = item["pixel_values"], item["labels"]
        assert pixels.shape == (3, 32, 32) and labels.shape == (32, 32) and labels.dtype == torch.int64
        decoded = torch.where(pixels[0] > 0.5, 1, torch.where(pixels[2] > 0.5, 2, 0))
        assert (decoded == labels).float().mean() > 0.93       # only resampled edges may differ
        first_epoch.append(labels)
    assert len({labels.numpy().tobytes() for labels in first_epoch}) > 4   # the crops and flips really vary
    dataset.set_epoch(1)
    assert any(not torch.equal(labels, dataset[i]["labels"]) for i, labels in enumerate(first_epoch))
    dataset.set_epoch(0)                                        # drawn from (seed, epoch, index): repeatable
    assert all(torch.equal(labels, dataset[i]["labels"]) for i, labels in enumerate(first_epoch))
    dataset.configure(prep, augment=False)                      # evaluation: the whole image, squashed
    assert torch.equal(dataset[0]["labels"], torch.from_numpy(np.asarray(
        Image.fromarray(mask).resize((32, 32), Image.Resampling.NEAREST), dtype=np.int64)))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[str, Path]:
    if not (THEME / "48x48").is_dir():
        pytest.skip("needs the adwaita-icon-theme package")
    from fmctl.data.icon_scenes import write_icon_scenes

    return write_icon_scenes(tmp_path_factory.mktemp("scenes"), {"train": 96, "validation": 16, "test": 16}, size=32)


@needs_icons
def test_a_cvt_learns_icon_masks_evaluates_exports_and_writes_mask_pngs(scenes, tmp_path):
    from fmctl.export.run import export_run
    from fmctl.export.writers import ExportOptions
    from fmctl.predict.run import predict

    data = [f"data.{split}={folder}" for split, folder in scenes.items()]
    run_dir = finetune("segment_icons", [*data, *TINY_SEG, "trainer.max_steps=60", "trainer.batch_size=16",
                                         "optim.lr=3e-3"], tmp_path / "run").run_dir
    # better than painting every pixel background: that scores the background share as pixel
    # accuracy and a quarter of the background's IoU as mean IoU (four classes in the masks)
    masks = np.stack([np.asarray(Image.open(f)) for f in sorted((scenes["validation"] / "masks").glob("*.png"))])
    share = float((masks == 0).sum() / (masks != 255).sum())
    final = json.loads((run_dir / "manifest.json").read_text())["metrics"]
    assert final["val/pixel_accuracy"] > share + 0.03 and final["val/mean_iou"] > share / 4 + 0.1
    from fmctl import pipeline
    from fmctl.config.saved_runs import load_run_config

    raw, run = load_run_config(run_dir, [])
    from rich.console import Console

    report = pipeline.evaluate_run(run_dir, run, raw, console=Console(file=open("/dev/null", "w")))
    assert set(report["per_class"]) == {"background", "places", "mimetypes", "devices"}
    assert report["mean_iou"] == pytest.approx(
        np.nanmean([v["iou"] if v["iou"] is not None else math.nan for v in report["per_class"].values()]))
    assert len(list((run_dir / "eval" / "overlays").glob("*.png"))) == 4
    exported = export_run(run_dir, ExportOptions(fmt="onnx", exporter="torchscript"), log=lambda _line: None).manifest
    assert exported["parity"]["passed"] and exported["parity"]["label_agreement"] == 1.0
    assert exported["parity"]["agreement"] == "pixel label" and exported["postprocessing"]["kind"] == "mask"
    assert exported["outputs"][0]["name"] == "logits" and exported["outputs"][0]["shape"][0] == "batch"
    images = scenes["test"] / "images"
    predict(run_dir, images=images, out=tmp_path / "run.jsonl", log=lambda _line: None)
    predict(run_dir / "export" / "onnx", images=images, out=tmp_path / "onnx.jsonl", masks=tmp_path / "m",
            log=lambda _line: None)
    from_run, from_onnx = read_jsonl(tmp_path / "run.jsonl"), read_jsonl(tmp_path / "onnx.jsonl")
    assert [Path(r["mask"]).parent for r in (from_run[0], from_onnx[0])] == [tmp_path / "run_masks", tmp_path / "m"]
    for a, b in zip(from_run, from_onnx):
        first, second = np.asarray(Image.open(a["mask"])), np.asarray(Image.open(b["mask"]))
        assert first.shape == second.shape == (32, 32) and (first == second).mean() > 0.99
        assert sum(a["classes"].values()) == pytest.approx(1.0, abs=1e-4)
    assert not list(tmp_path.glob("*.partial"))
    with pytest.raises(DataError, match="^--masks: a segmentation model writes a mask PNG per image; give --masks"):
        predict(run_dir, images=images, log=lambda _line: None)       # stdout cannot hold pictures
    # the encoder/ of a segmentation run starts a CvT classifier (backbone.pretrained=RUN)
    from safetensors.torch import load_file

    from fmctl import backbones
    from fmctl.backbones.cvt import CvtBackboneConfig

    start = CvtBackboneConfig(pretrained=str(run_dir))
    classifier = backbones.family("cvt").build(start, "image_classification", label_names=["x", "y"])
    name = "encoder.stages.2.layers.0.output.dense.weight"
    saved = load_file(str(run_dir / "model" / "encoder" / "model.safetensors"))
    assert torch.equal(classifier.cvt.state_dict()[name], saved[name])


def test_a_vit_encoder_feeds_the_same_decoder(tmp_path):
    from fmctl import backbones
    from fmctl.config.schema import VisionBackboneConfig
    from fmctl.models import segmentation

    cfg = VisionBackboneConfig(hidden_size=32, num_layers=2, num_heads=2, image_size=32, patch_size=4)
    encoder = backbones.family("vit").build(cfg, "features")
    model = segmentation.SegmentationModel(encoder, "vit", 3, 16).eval()
    pixels = torch.randn(2, 3, 32, 32)
    assert model(pixels).shape == (2, 3, 32, 32)
    groups = backbones.structure_of(model, "vit").groups(model)
    assert list(groups)[-1] == "head" and all(n.startswith("decode_head.") for n in groups["head"])
    assert "image.blocks.1" in groups
    prep = backbones.family("vit").preprocessor(cfg, model=encoder)
    segmentation.save(model, tmp_path, prep, ["a", "b", "c"], 255)
    assert json.loads((tmp_path / "config.json").read_text())["backbone"] == "vit"
    assert torch.allclose(segmentation.load(tmp_path).eval()(pixels), model(pixels), atol=1e-6)
