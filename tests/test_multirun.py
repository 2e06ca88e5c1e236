"""`-m` goes through Hydra's own sweeper and launcher: a run folder per job, a failing
job recorded rather than fatal, and a summary of every job's final metrics."""
import json

from tests.helpers import TINY_TEXT, run_cli

BASE = ["recipe=text_csv", "data.text_column=Review Text", "data.label_column=sentiment", *TINY_TEXT,
        "trainer.max_steps=6", "trainer.batch_size=16"]


def test_sweep_runs_each_job_into_its_own_folder(reviews, tmp_path):
    sweep = tmp_path / "sweep"
    done = run_cli(["finetune", *BASE, f"data.train={reviews['train']}", "optim.lr=1e-3,3e-3", "-m",
                    f"run_dir={sweep}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    lrs = []
    for job in jobs:
        manifest = json.loads((sweep / job / "manifest.json").read_text())
        assert manifest["status"] == "completed" and (sweep / job / "model" / "model.safetensors").is_file()
        lrs.append(next(o for o in manifest["overrides"] if o.startswith("optim.lr=")))
    assert lrs == ["optim.lr=0.001", "optim.lr=0.003"]
    summary = json.loads((sweep / "summary.json").read_text())
    assert [row["status"] for row in summary] == ["completed", "completed"]
    assert all("val/accuracy" in row["metrics"] for row in summary)
    assert "val/accuracy" in done.stdout and "optim.lr=0.003" in done.stdout
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


def test_a_failing_job_does_not_stop_the_sweep(reviews, tmp_path):
    sweep = tmp_path / "sweep"
    done = run_cli(["finetune", *BASE, f"data.train={reviews['train']}", "trainer.batch_size=16,abc", "-m",
                    f"run_dir={sweep}"], cwd=tmp_path)
    assert done.returncode == 1  # the sweep finished, but not every job completed
    summary = json.loads((sweep / "summary.json").read_text())
    assert [row["status"] for row in summary] == ["completed", "failed"]
    assert "trainer.batch_size: expected an integer" in summary[1]["error"]
    assert (sweep / "1" / "error.txt").is_file()
    assert "failed" in done.stdout


def test_cfg_job_prints_the_composed_config(tmp_path):
    done = run_cli(["finetune", "recipe=vit_digits", "optim.lr=0.01", "--cfg", "job"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "lr: 0.01" in done.stdout and "name: vit" in done.stdout
    assert not any(tmp_path.iterdir())  # printing a config writes nothing
