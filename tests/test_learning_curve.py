"""`fmctl report learning-curve`: cells through the fine-tuning spine, budgets against the
data, failures recorded, finished cells re-used, the headline's interpolation; and
`fmctl compare`."""
import io
import json

import pytest
from rich.console import Console

from fmctl.curve.run import learning_curve
from fmctl.curve.summary import headlines
from fmctl.errors import ConfigError
from tests.helpers import TINY_TEXT


def quiet():
    return Console(file=io.StringIO(), width=200)


def _words(reviews, tmp_path, starts):
    return ["recipe=text_csv", f"data.train={reviews['train']}", f"data.test={reviews['test']}",
            "data.text_column=Review Text", "data.label_column=sentiment", *TINY_TEXT, "trainer.max_steps=4",
            "trainer.eval_every=4", "trainer.batch_size=8", "scratch.optim.lr=2e-3", "budgets=[8,5000]", "seeds=2",
            f"starts=[{','.join(starts)}]", f"out={tmp_path / 'curve'}"]


@pytest.fixture(scope="module")
def curve(reviews, tiny_bert_run, tiny_vit_run, tmp_path_factory):
    """scratch, the tiny BERT run, and a ViT run that cannot start a text task (its cells fail)."""
    tmp = tmp_path_factory.mktemp("curve")
    words = _words(reviews, tmp, ["scratch", str(tiny_bert_run), str(tiny_vit_run)])
    status = learning_curve(words, console=quiet())
    return tmp / "curve", words, status


def test_cells_run_as_finetunes_and_failures_are_recorded(curve):
    folder, _, status = curve
    summary = json.loads((folder / "learning_curve.json").read_text())
    assert status == 1                                     # the ViT cells failed ...
    assert summary["notes"] == ["budget 5000 is not less than the 432 training examples; using all 432 once"]
    cells = {c["cell"]: c for c in summary["cells"]}
    assert len(cells) == 3 * 2 * 2
    assert all(c["status"] == "completed" for n, c in cells.items() if not n.startswith("run-"))  # ... the rest ran
    failed = [c for n, c in cells.items() if n.startswith("run-")]
    assert len(failed) == 4 and all(c["status"] == "failed" and "timm image model" in c["error"] for c in failed)
    assert cells["scratch_n8_seed1"]["labels"] == 8 and cells["scratch_nall_seed0"]["labels"] == 432
    manifest = json.loads((folder / "cells" / "scratch_n8_seed1" / "manifest.json").read_text())
    assert manifest["verb"] == "finetune" and "data.label_budget=8" in manifest["overrides"]
    assert "optim.lr=2e-3" in manifest["overrides"]        # scratch.* reached the scratch cells only
    assert "optim.lr=2e-3" not in json.loads((folder / "cells" / "run_n8_seed0" / "manifest.json").read_text())[
        "overrides"]
    point = next(p for p in summary["points"] if p["start"] == "scratch" and p["budget"] == 8)
    values = [cells[f"scratch_n8_seed{s}"]["metrics"]["test/accuracy"] for s in (0, 1)]
    assert summary["metric"] == "test/accuracy" and point["values"] == values
    assert point["mean"] == pytest.approx(sum(values) / 2)
    assert (folder / "learning_curve.png").stat().st_size > 10_000
    table = (folder / "learning_curve.md").read_text()
    assert "| scratch | " in table and "2 failed" in table and "labels that scratch needs to match run" in table


def test_a_second_run_reuses_every_finished_cell(curve):
    folder, words, _ = curve
    model = folder / "cells" / "scratch_n8_seed0" / "model" / "model.safetensors"
    before = model.stat().st_mtime_ns
    out = io.StringIO()
    assert learning_curve(words, console=Console(file=out, width=300)) == 1
    assert "8 finished earlier (re-used), 4 to run" in out.getvalue()
    assert model.stat().st_mtime_ns == before
    changed = [w if not w.startswith("trainer.max_steps") else "trainer.max_steps=5" for w in words]
    with pytest.raises(ConfigError, match="holds a learning curve of other settings"):
        learning_curve(changed, console=quiet())


def test_bad_starts_and_budgets_are_refused_before_training(reviews, tmp_path):
    with pytest.raises(ConfigError, match=r"starts\[1\]: '/nowhere' does not exist"):
        learning_curve(_words(reviews, tmp_path, ["scratch", "/nowhere"]), console=quiet())
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match=r"starts\[1\]: '.*empty' has no config.json"):
        learning_curve(_words(reviews, tmp_path, ["scratch", str(tmp_path / "empty")]), console=quiet())
    with pytest.raises(ConfigError, match=r"budgets\[0\]: 1 labels cannot cover the 2 classes"):
        learning_curve(_words(reviews, tmp_path, ["scratch"]) + ["budgets=[1]"], console=quiet())
    with pytest.raises(ConfigError, match="--nproc: a learning curve runs its cells as a sweep"):
        learning_curve(_words(reviews, tmp_path, ["scratch"]) + ["--nproc", "2"], console=quiet())
    assert not (tmp_path / "curve").exists()


def test_headline_interpolates_on_a_log_scale_of_labels():
    points = [{"start": "scratch", "labels": 50, "mean": 0.50}, {"start": "scratch", "labels": 200, "mean": 0.70},
              {"start": "scratch", "labels": 1000, "mean": 0.90}, {"start": "minilm", "labels": 50, "mean": 0.80},
              {"start": "minilm", "labels": 200, "mean": 0.95}, {"start": "minilm", "labels": 1000, "mean": 0.40}]
    found = {e["labels"]: e for e in headlines(points, "max")}
    assert found[50]["scratch_labels"] == round(200 * 5 ** 0.5)     # halfway between 200 and 1000 in log space
    assert found[50]["between"] == [200, 1000]
    assert found[200]["reached"] is False and found[200]["best_scratch"] == 0.90
    assert found[1000]["at_most"] is True and found[1000]["scratch_labels"] == 50


def test_compare_runs_of_one_task_and_of_two(curve, tiny_vit_run, tmp_path):
    from fmctl.evaluate.compare import compare

    folder = curve[0] / "cells"
    same = compare([str(folder / "scratch_n8_seed0"), str(folder / "run_n8_seed0"), f"out={tmp_path / 'a'}"],
                   console=quiet())
    assert same["shared_metrics"][:2] == ["val/accuracy", "val/macro_f1"] and "test/accuracy" in same["shared_metrics"]
    differ = same["config_differences"]
    assert differ["optim.lr"] == {"scratch_n8_seed0": 2e-3, "run_n8_seed0": 5e-4}   # text_csv's own for the other
    assert differ["backbone.pretrained"]["scratch_n8_seed0"] is None and "data.label_budget" not in differ
    assert same["curve_metric"] == "val/accuracy" and (tmp_path / "a" / "validation_curves.png").is_file()
    assert "| optim.lr | 0.002 | 0.0005 |" in (tmp_path / "a" / "compare.md").read_text()

    mixed = compare([str(folder / "scratch_n8_seed0"), str(tiny_vit_run), f"out={tmp_path / 'b'}"], console=quiet())
    assert mixed["left_out"]["test/accuracy"] == ["scratch_n8_seed0"]     # the ViT run has no test split
    assert mixed["config_differences"]["task.name"] == {"scratch_n8_seed0": "text_classification",
                                                        "run": "image_classification"}
    assert mixed["curve_metric"] == "val/loss" and "validation curves of their shared val/loss" in mixed["notes"][0]
    with pytest.raises(ConfigError, match="metric: 'val/f1' is not logged by scratch_n8_seed0, run"):
        compare([str(folder / "scratch_n8_seed0"), str(tiny_vit_run), "metric=val/f1"], console=quiet())
    with pytest.raises(ConfigError, match="give two or more run folders"):
        compare([str(tiny_vit_run)], console=quiet())
