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


def test_joblib_launcher_runs_jobs_in_parallel_processes(reviews, tmp_path):
    sweep = tmp_path / "sweep"
    done = run_cli(["finetune", *BASE, f"data.train={reviews['train']}", "optim.lr=1e-3,3e-3", "-m",
                    "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"run_dir={sweep}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((sweep / "summary.json").read_text())
    assert [row["status"] for row in summary] == ["completed", "completed"]
    pids = {json.loads((sweep / str(i) / "manifest.json").read_text())["run_dir"] for i in (0, 1)}
    assert len(pids) == 2


def test_slurm_launcher_config_composes(tmp_path):
    done = run_cli(["finetune", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra"],
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in done.stdout
    assert "partition: gpu" in done.stdout and "timeout_min: 240" in done.stdout


def test_jobs_survive_pickling_through_submitit(reviews, tmp_path):
    """submitit_local pickles each job the way the SLURM launcher does and runs it in a
    separate process: the job function and its config must round-trip."""
    sweep = tmp_path / "sweep"
    done = run_cli(["finetune", *BASE, f"data.train={reviews['train']}", "trainer.max_steps=3", "-m",
                    "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", f"run_dir={sweep}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((sweep / "0" / "manifest.json").read_text())["status"] == "completed"


def test_sweep_table_shows_list_values(tmp_path, capsys):
    """customize=[lora] is an override, not rich markup: the table must show it whole."""
    import json

    from fmctl.report import print_sweep_summary

    for job, ops in enumerate(("[lora]", "[freeze,head]")):
        (tmp_path / str(job)).mkdir()
        (tmp_path / str(job) / "manifest.json").write_text(json.dumps(
            {"status": "completed", "overrides": [f"customize={ops}", "trainer.max_steps=2"],
             "metrics": {"val/accuracy": 0.5}}))
    print_sweep_summary(tmp_path)
    out = capsys.readouterr().out
    assert "customize=[lora]" in out and "customize=[freeze,head]" in out
