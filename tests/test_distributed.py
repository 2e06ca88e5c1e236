"""torchrun on CPU (gloo): DDP matches one process with the same global batch, FSDP
checkpoints reshard onto one process, every run writes exactly one run folder, and a
signal to the launcher stops every rank with a checkpoint and nothing left running."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from fmctl.checkpoint import latest_checkpoint
from tests.helpers import TINY_TEXT, read_jsonl, run_cli

BASE = ["recipe=text_csv", "data.text_column=Review Text", "data.label_column=sentiment", *TINY_TEXT,
        "backbone.dropout=0", "trainer.max_steps=8", "trainer.log_every=2", "trainer.eval_every=4",
        "data.max_train_examples=256"]


def losses(run_dir):
    return [r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["event"] == "train"]


@pytest.fixture(scope="module")
def single(reviews, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("single") / "run"
    done = run_cli(["finetune", *BASE, f"data.train={reviews['train']}", "trainer.batch_size=16",
                    f"run_dir={run_dir}"], cwd=run_dir.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def test_ddp_two_processes_match_one_with_the_same_global_batch(reviews, single, tmp_path):
    run_dir = tmp_path / "runs" / "ddp"
    done = run_cli(["finetune", *BASE, f"data.train={reviews['train']}", "trainer.batch_size=8", "--nproc", "2",
                    f"run_dir={run_dir}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert losses(run_dir) == pytest.approx(losses(single), rel=1e-5)
    a, b = load_file(str(single / "model" / "model.safetensors")), load_file(str(run_dir / "model" / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["ddp"]  # one run folder, not one per rank
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["strategy"] == "ddp" and manifest["status"] == "completed"
    assert not (tmp_path / "outputs").exists()


def test_fsdp_trains_and_its_sharded_checkpoint_resumes_on_one_process(reviews, single, tmp_path):
    run_dir = tmp_path / "fsdp"
    done = run_cli(["finetune", *BASE, f"data.train={reviews['train']}", "trainer.batch_size=8", "trainer.nproc=2",
                    "trainer.strategy=fsdp", "trainer.checkpoint_every=4", f"run_dir={run_dir}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert losses(run_dir) == pytest.approx(losses(single), rel=1e-4)
    step = run_dir / "checkpoints" / "step_00000008"
    assert (step / "dcp" / ".metadata").is_file() and not (step / "model.safetensors").exists()
    assert (run_dir / "model" / "model.safetensors").is_file()  # consolidated for export
    resumed = run_cli(["finetune", *BASE, f"data.train={reviews['train']}", "trainer.batch_size=16",
                       "trainer.max_steps=10", "trainer.strategy=fsdp", "trainer.resume=auto", f"run_dir={run_dir}"],
                      cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step_00000008" in resumed.stdout
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["steps"] == 10 and manifest["status"] == "completed"


def test_a_sweep_cannot_also_launch_torchrun(tmp_path):
    done = run_cli(["finetune", "optim.lr=1e-3,2e-3", "-m", "trainer.nproc=2"], cwd=tmp_path)
    assert done.returncode == 2 and "cannot also launch torchrun" in done.stderr


def processes_of(run_dir: Path) -> list[str]:
    """Command lines still running for this run folder (launcher, torchrun, ranks), zombies aside."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if str(run_dir) in cmdline and state != "Z":
            found.append(cmdline)
    return found


def assert_nothing_left(run_dir: Path) -> None:
    deadline = time.time() + 5
    while processes_of(run_dir) and time.time() < deadline:
        time.sleep(0.1)
    assert not processes_of(run_dir), "orphaned processes"
    assert not (run_dir / ".lock").exists()


def start(args: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    """The CLI in a session of its own, so a signal to its process group spares pytest."""
    return subprocess.Popen([sys.executable, "-m", "fmctl", *args], cwd=cwd, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


LONG = [*BASE, "trainer.max_steps=60", "trainer.eval_every=1000"]  # long enough that the signal lands mid-run


@pytest.mark.parametrize("target", ["launcher", "launcher-group"])
def test_sigterm_to_the_launcher_checkpoints_stops_every_rank_and_resumes(reviews, tmp_path, target):
    run_dir = tmp_path / "run"
    words = ["finetune", *LONG, f"data.train={reviews['train']}", "trainer.batch_size=8", "trainer.nproc=2"]
    proc = start([*words, f"run_dir={run_dir}"], tmp_path, {"FMCTL_FAULT_KILL_AT": "2.0",
                                                             "FMCTL_FAULT_KILL_SIGNAL": "TERM",
                                                             "FMCTL_FAULT_KILL_TARGET": target})
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err[-3000:]
    assert "Traceback" not in err and "ChildFailedError" not in err, err[-3000:]
    stopped = [line for line in err.splitlines() if "stopped by SIGTERM" in line]
    assert len(stopped) == 1, err[-3000:]  # rank 0 alone, with the checkpoint's path
    assert err.count("finishing this step and writing a checkpoint") == 1
    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint is not None and f"checkpoint {checkpoint}" in stopped[0] and "trainer.resume=auto" in stopped[0]
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "preempted"
    assert_nothing_left(run_dir)
    resumed = run_cli([*words, "trainer.resume=auto", f"run_dir={run_dir}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {checkpoint.name}" in resumed.stdout
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["steps"] == 60


def test_second_ctrl_c_to_the_launcher_ends_every_rank_at_once(reviews, tmp_path):
    run_dir = tmp_path / "run"
    proc = start(["finetune", *LONG, f"data.train={reviews['train']}", "trainer.batch_size=8", "trainer.nproc=2",
                  f"run_dir={run_dir}"], tmp_path,
                 {"FMCTL_FAULT_KILL_AT": "2.0", "FMCTL_FAULT_KILL_SIGNAL": "INT", "FMCTL_FAULT_KILL_TARGET": "launcher",
                  "FMCTL_FAULT_SAVE_DELAY": "30"})  # the first Ctrl-C's checkpoint now takes 30 s
    deadline = time.time() + 120
    while not (run_dir / "checkpoints").is_dir() or not any((run_dir / "checkpoints").iterdir()):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    started = time.time()
    proc.send_signal(signal.SIGINT)  # ... and the second one does not wait for it
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and time.time() - started < 10, err[-3000:]
    assert "Traceback" not in err and "ChildFailedError" not in err, err[-3000:]
    assert not list((run_dir / "checkpoints").glob("step_*"))
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "interrupted"
    assert_nothing_left(run_dir)
