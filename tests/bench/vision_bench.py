"""`make bench` (vision part): the figures README.md quotes for CvT and segmentation.

1. vit_digits and cvt_digits at the same budget (their recipes: 10 epochs of batch 64,
   AdamW 1e-3, cosine), both in fp32: validation and test accuracy, training time.
2. The CvT run exported to ONNX with --quantize int8: parity of fp32 and int8 with PyTorch.
3. segment_icons: mean IoU, pixel accuracy and per-class IoU on the 200 held-out test
   composites, for the model as training starts (random init, the run's seed) and after it.

Usage: python tests/bench/vision_bench.py [OUT_DIR]   (default runs/bench-vision)
FMCTL_BENCH_THREADS=N sets trainer.num_threads (default: every core).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarks_md import write_section  # noqa: E402

THREADS = os.environ.get("FMCTL_BENCH_THREADS")
COMMON = ["trainer.progress=off", "trainer.precision=fp32", *([f"trainer.num_threads={THREADS}"] if THREADS else [])]


def _checked(recipe: str, run_dir: Path) -> tuple:
    from fmctl.config.compose import parse_invocation, preflight
    from fmctl.config.validate import validate

    checked = preflight(parse_invocation([f"recipe={recipe}", *COMMON, f"run_dir={run_dir}", "overwrite=true"]))
    return validate(checked.config), checked.config


def train(recipe: str, run_dir: Path) -> tuple[dict, float]:
    """The recipe's run: its final metrics and the seconds training took."""
    from rich.console import Console

    from fmctl import pipeline

    run, raw = _checked(recipe, run_dir)
    start = time.perf_counter()
    result = pipeline.finetune(run, raw, console=Console(file=open(os.devnull, "w")))
    return result.metrics, time.perf_counter() - start


def untrained_test_metrics(recipe: str, run_dir: Path) -> dict:
    """The test split scored by the model exactly as training would start it."""
    from fmctl import tasks
    from fmctl.loop.fit import evaluate, make_loader, seed_everything
    from fmctl.loop.precision import Precision

    run, _ = _checked(recipe, run_dir)
    seed_everything(run.trainer.seed)
    task = tasks.create(run.task)
    data = task.prepare(run)
    seed_everything(run.trainer.seed)
    model = task.build_model(run, data)
    loader = make_loader(data.test, run.trainer.batch_size, data.collate)
    return evaluate(model, task, loader, "cpu", Precision("fp32", "cpu")).report()


def trained_test_report(run_dir: Path) -> dict:
    from rich.console import Console

    from fmctl import pipeline
    from fmctl.config.saved_runs import load_run_config

    raw, run = load_run_config(run_dir, [])
    return pipeline.evaluate_run(run_dir, run, raw, console=Console(file=open(os.devnull, "w")))


def classification_rows(root: Path) -> list[tuple[str, str]]:
    from fmctl.export.run import export_run
    from fmctl.export.writers import ExportOptions

    rows = []
    for recipe in ("vit_digits", "cvt_digits"):
        metrics, seconds = train(recipe, root / recipe)
        params = json.loads((root / recipe / "manifest.json").read_text())["parameters"]["total"]
        rows.append((f"{recipe} ({params:,} parameters), fp32, 10 epochs",
                     f"val accuracy {metrics['val/accuracy']:.4f}, test accuracy {metrics['test/accuracy']:.4f}, "
                     f"{seconds:.0f} s"))
    manifest = export_run(root / "cvt_digits", ExportOptions(fmt="onnx", quantize="int8"), log=lambda _l: None).manifest
    for key, name in (("parity", "fp32"), ("parity_int8", "int8")):
        parity = manifest[key]
        rows.append((f"cvt_digits ONNX {name} vs PyTorch ({parity['examples']} validation images)",
                     f"max abs diff {parity['max_abs_diff']:.2g}, label agreement {parity['label_agreement']:.4f}"))
    return rows


def segmentation_rows(root: Path) -> list[tuple[str, str]]:
    before = untrained_test_metrics("segment_icons", root / "untrained")
    _, seconds = train("segment_icons", root / "segment_icons")
    after = trained_test_report(root / "segment_icons")
    rows = []
    for when, report in (("untrained (random init)", before), (f"trained ({seconds:.0f} s)", after)):
        per_class = ", ".join(f"{name} {row['iou']:.3f}" for name, row in report["per_class"].items()
                              if row["iou"] is not None)
        rows.append((f"segment_icons test, {when}",
                     f"mIoU {report['mean_iou']:.4f}, pixel accuracy {report['pixel_accuracy']:.4f} "
                     f"(IoU: {per_class})"))
    return rows


def main(root: Path) -> None:
    rows = classification_rows(root) + segmentation_rows(root)
    for name, value in rows:
        print(f"{name}: {value}")
    write_section("vision", rows, "python tests/bench/vision_bench.py",
                  f"fp32 training and evaluation, trainer.num_threads={THREADS or 'default'}, load average "
                  f"{os.getloadavg()[0]:.1f} at the end (a shared machine: the seconds vary with it, the metrics do not)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/bench-vision"))
