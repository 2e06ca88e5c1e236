"""The README's captioning figures, measured (slow: minutes per run on two free cores, longer
on a shared machine; `pytest -m slow tests/test_caption_evidence.py -s`).

On the Adwaita icon pairs `fmctl data icons` makes (32 px, split by concept, so no test
caption was seen in training), the shipped recipe `caption_icons` (a ViT encoder) and the
same budget with a CvT encoder are trained and evaluated on test.csv. Beside them, two
nearest-neighbour baselines caption each test image with the caption of the most similar
training image: similar by cosine over the raw pixels (the 32 x 32 RGB input, laid on
white, normalised as the model reads it), and by cosine over the trained ViT encoder's
mean token state. The evidence asserted:

- the captioner's test BLEU and CIDEr-D beat the pixel nearest neighbour's;
- every figure is a real score (finite, 0-100 for BLEU and chrF).

It prints the table the README shows, with the CPU, its flags and the precision."""
from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

VARIANTS = {"ViT tiny + GPT-2 tiny (the recipe)": [],
            "CvT tiny + GPT-2 tiny": ["backbone=cvt"]}


def _rows(table: Path) -> list[dict[str, str]]:
    with table.open(encoding="utf-8", newline="") as f:
        return [{"image": str(table.parent / r["image"]), "caption": r["caption"]} for r in csv.DictReader(f)]


def _train_and_eval(pairs: Path, extra: list[str], run_dir: Path) -> dict:
    from rich.console import Console

    from fmctl import pipeline
    from fmctl.config.saved_runs import load_run_config
    from tests.helpers import compose

    quiet = Console(file=open(os.devnull, "w"))
    raw, run = compose("caption_icons", [f"data.train={pairs}/train.csv", f"data.validation={pairs}/validation.csv",
                                         f"data.test={pairs}/test.csv", "trainer.progress=off", *extra], run_dir)
    wall, load = time.perf_counter(), os.getloadavg()[0]
    result = pipeline.finetune(run, raw, console=quiet)
    wall = time.perf_counter() - wall
    _, saved = load_run_config(result.run_dir, [])
    report = pipeline.evaluate_run(result.run_dir, saved, console=quiet)
    return {"report": report, "wall_s": wall, "load": load, "run_dir": result.run_dir,
            "precision": result.fit.precision, "steps": result.fit.steps}


def _pixels(rows: list[dict[str, str]], prep: dict) -> "torch.Tensor":  # noqa: F821
    import torch

    from fmctl.data.images import build_transform, open_image

    transform = build_transform(prep, train=False, augment=False)
    return torch.stack([transform(open_image(Path(r["image"]), "RGB")) for r in rows])


def _nearest_captions(train_vectors, test_vectors, train_rows) -> list[str]:
    import torch.nn.functional as F

    similarity = F.normalize(test_vectors, dim=-1) @ F.normalize(train_vectors, dim=-1).T
    return [train_rows[int(i)]["caption"] for i in similarity.argmax(dim=1)]


def _baselines(pairs: Path, vit_run: Path) -> dict[str, dict]:
    """Test scores of the nearest training image's caption, by pixels and by the ViT's features."""
    import torch

    from fmctl.evaluate.captioning import caption_scores
    from fmctl.models.captioning import load, read_config

    train, test = _rows(pairs / "train.csv"), _rows(pairs / "test.csv")
    prep = read_config(vit_run / "model")["image_preprocessing"]
    train_px, test_px = _pixels(train, prep), _pixels(test, prep)
    references = [[r["caption"]] for r in test]
    model = load(vit_run / "model").eval()

    def features(px):
        with torch.no_grad():
            return torch.cat([model.encode(px[i:i + 256]).last_hidden_state.mean(1) for i in range(0, len(px), 256)])

    return {"nearest training image, by pixels": caption_scores(
                _nearest_captions(train_px.flatten(1), test_px.flatten(1), train), references),
            "nearest training image, by the ViT encoder's mean token": caption_scores(
                _nearest_captions(features(train_px), features(test_px), train), references)}


def _row(name: str, m: dict, wall: str) -> str:
    return f"| {name} | {m['bleu']:.1f} | {m['chrf']:.1f} | {m['cider']:.3f} | {wall} |"


def test_captioning_on_icon_pairs_beats_nearest_neighbour(tmp_path):
    """Each table row is printed as soon as it is measured (the CvT run is the longest)."""
    from fmctl import cpu
    from fmctl.data.icons import IconsConfig, make_icons

    pairs = tmp_path / "icons"
    make_icons(IconsConfig(out=str(pairs)))
    names = list(VARIANTS)
    vit = _train_and_eval(pairs, VARIANTS[names[0]], tmp_path / "run0")
    print(f"\nCPU: {cpu.summary()}; precision {vit['precision']}; {vit['steps']} steps, batch 64")
    print(f"test pairs: {len(_rows(pairs / 'test.csv'))}, training pairs: {len(_rows(pairs / 'train.csv'))}")
    print("| captions of the test icons | BLEU | chrF | CIDEr-D | train wall s (load) |")
    print("|---|---|---|---|---|")
    print(_row(names[0], vit["report"], f"{vit['wall_s']:.0f} ({vit['load']:.1f})"), flush=True)
    baselines = _baselines(pairs, vit["run_dir"])
    for name, m in baselines.items():
        print(_row(name, m, "-"), flush=True)
    predictions = (vit["run_dir"] / "eval" / "predictions.jsonl").read_text().splitlines()[:8]
    print("first test predictions (ViT):", *predictions, sep="\n  ", flush=True)
    pixel = baselines["nearest training image, by pixels"]
    assert vit["report"]["bleu"] > pixel["bleu"] and vit["report"]["cider"] > pixel["cider"]
    reports = [vit["report"], *baselines.values()]
    for i, name in enumerate(names[1:], start=1):
        other = _train_and_eval(pairs, VARIANTS[name], tmp_path / f"run{i}")
        print(_row(name, other["report"], f"{other['wall_s']:.0f} ({other['load']:.1f})"), flush=True)
        reports.append(other["report"])
    for r in reports:
        assert 0 <= r["bleu"] <= 100 and 0 <= r["chrf"] <= 100 and r["cider"] >= 0
