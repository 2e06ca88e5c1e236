"""Training that survives faults: a run killed at any point and resumed ends bit-identical
to one never interrupted; saves are atomic; signals stop cleanly; NaN steps are handled;
state files are loaded without running pickled code."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from fmctl.checkpoint import latest_checkpoint
from fmctl.loop.tracking import TIMING_KEYS
from tests.helpers import TINY_TEXT, finetune, read_jsonl, run_cli

# 240 examples, batch 16, accumulation 2: 8 optimizer steps per epoch, so 12 steps cross
# an epoch boundary; checkpoints every 3 steps, evaluations every 4.
STEPS = 12


def args(reviews, run_dir, *extra):
    return ["finetune", "recipe=text_csv", f"data.train={reviews['train']}", "data.text_column=Review Text",
            "data.label_column=sentiment", "data.max_train_examples=240", *TINY_TEXT, f"trainer.max_steps={STEPS}",
            "trainer.batch_size=16", "trainer.grad_accum=2", "trainer.checkpoint_every=3", "trainer.eval_every=4",
            "trainer.log_every=1", "trainer.keep_last=2", "optim.lr=2e-3", f"run_dir={run_dir}", *extra]


def comparable(run_dir):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_jsonl(run_dir / "metrics.jsonl")]


def weights(path):
    return load_file(str(path))


def assert_identical_runs(a, b):
    wa, wb = weights(a / "model" / "model.safetensors"), weights(b / "model" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(wa[k].equal(wb[k]) for k in wa), "final weights differ"
    assert comparable(a) == comparable(b)


@pytest.fixture(scope="module")
def reference(reviews, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    done = run_cli(args(reviews, run_dir), cwd=run_dir.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def test_two_fresh_processes_give_identical_runs(reviews, reference, tmp_path):
    done = run_cli(args(reviews, tmp_path / "again"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_identical_runs(reference, tmp_path / "again")


@pytest.mark.parametrize("kill_at", ["5.1", "9.0"], ids=["mid-accumulation", "right-after-a-checkpoint"])
def test_sigkill_then_resume_is_bit_identical(reviews, reference, tmp_path, kill_at):
    run_dir = tmp_path / "run"
    killed = run_cli(args(reviews, run_dir), cwd=tmp_path, env={"FMCTL_FAULT_KILL_AT": kill_at})
    assert killed.returncode == -signal.SIGKILL, "the fault point was never reached"
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "running"
    assert not (run_dir / "model").exists()
    resumed = run_cli(args(reviews, run_dir, "trainer.resume=auto"), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step_" in resumed.stdout
    assert_identical_runs(reference, run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["resumes"] == 1
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*")) == ["step_00000009", "step_00000012"]


def test_kill_during_a_save_leaves_the_previous_checkpoint(reviews, reference, tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "FMCTL_FAULT_SAVE_DELAY": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "fmctl", *args(reviews, run_dir)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = run_dir / "checkpoints"
    deadline = time.time() + 120
    try:
        # Wait for step 3 to be complete and the save of step 6 to be under way, then kill.
        while time.time() < deadline:
            if (checkpoints / "step_00000003" / "info.json").is_file() and list(checkpoints.glob(".step_00000006-*")):
                break
            assert proc.poll() is None, "the run ended before the save could be interrupted"
            time.sleep(0.05)
        else:
            pytest.fail("the second save never started")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert latest_checkpoint(run_dir).name == "step_00000003"
    assert not (checkpoints / "step_00000006").exists()
    from fmctl.loop.state import load_state

    assert load_state(checkpoints / "step_00000003" / "state.pt")["progress"]["step"] == 3
    resumed = run_cli(args(reviews, run_dir, "trainer.resume=auto"), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_identical_runs(reference, run_dir)


def test_sigterm_checkpoints_and_exits_with_the_preempted_status(reviews, reference, tmp_path):
    run_dir = tmp_path / "run"
    stopped = run_cli(args(reviews, run_dir), cwd=tmp_path,
                      env={"FMCTL_FAULT_KILL_AT": "6.1", "FMCTL_FAULT_KILL_SIGNAL": "TERM"})
    assert stopped.returncode == 75, stopped.stderr[-2000:]
    assert "stopped by SIGTERM at step 7" in stopped.stderr and "trainer.resume=auto" in stopped.stderr
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "preempted"
    assert latest_checkpoint(run_dir).name == "step_00000007"  # the step in flight was finished first
    resumed = run_cli(args(reviews, run_dir, "trainer.resume=auto"), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_identical_runs(reference, run_dir)


def test_second_ctrl_c_exits_at_once(reviews, tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "FMCTL_FAULT_SAVE_DELAY": "20"}
    proc = subprocess.Popen([sys.executable, "-m", "fmctl", *args(reviews, run_dir, "trainer.max_steps=100000",
                                                                   "trainer.checkpoint_every=100000",
                                                                   "trainer.eval_every=100000")],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run_dir / "metrics.jsonl").is_file() or not (run_dir / "metrics.jsonl").read_text().strip():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # asks for a checkpoint, whose save now takes 20 s
    time.sleep(1.5)
    started = time.time()
    proc.send_signal(signal.SIGINT)  # ... and the second one does not wait for it
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and time.time() - started < 10
    assert "Ctrl-C again to exit now" in err
    assert not list((run_dir / "checkpoints").glob("step_*"))  # the interrupted save left nothing half-done
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "interrupted"


TEXT_IN_PROCESS = ["data.text_column=Review Text", "data.label_column=sentiment", *TINY_TEXT, "trainer.max_steps=6",
                   "trainer.batch_size=16", "trainer.log_every=1", "trainer.eval_every=100"]


def test_nonfinite_step_is_skipped_and_counted(reviews, tmp_path, monkeypatch):
    monkeypatch.setenv("FMCTL_FAULT_NONFINITE", "3")
    result = finetune("text_csv", [f"data.train={reviews['train']}", *TEXT_IN_PROCESS], tmp_path / "run")
    assert result.fit.steps == 6 and result.fit.nonfinite_skipped == 1
    events = [r for r in read_jsonl(result.run_dir / "metrics.jsonl") if r["event"] == "nonfinite"]
    assert events == [{"event": "nonfinite", "step": 2, "at_step": 3, "skipped_total": 1, "action": "skip"}]
    assert all(v.isfinite().all() for v in weights(result.run_dir / "model" / "model.safetensors").values())
    assert json.loads((result.run_dir / "manifest.json").read_text())["nonfinite_skipped"] == 1


def test_nonfinite_stop_names_the_step_and_keeps_the_last_good_state(reviews, tmp_path, monkeypatch):
    from fmctl.loop.fit import NonFiniteLoss

    monkeypatch.setenv("FMCTL_FAULT_NONFINITE", "3")
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at step 3; last good checkpoint: .*step_00000002"):
        finetune("text_csv", [f"data.train={reviews['train']}", *TEXT_IN_PROCESS, "trainer.on_nonfinite=stop"],
                 tmp_path / "run")
    state = weights(tmp_path / "run" / "checkpoints" / "step_00000002" / "model.safetensors")
    assert all(v.isfinite().all() for v in state.values())
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "failed"


def test_too_many_skipped_steps_stop_the_run(reviews, tmp_path, monkeypatch):
    from fmctl.loop.fit import NonFiniteLoss

    monkeypatch.setenv("FMCTL_FAULT_NONFINITE", "2,3,4,5")
    with pytest.raises(NonFiniteLoss, match=r"3 steps with a non-finite loss \(trainer.max_nonfinite_skips=2\), "
                                            r"the last at step 2"):
        finetune("text_csv", [f"data.train={reviews['train']}", *TEXT_IN_PROCESS, "trainer.max_nonfinite_skips=2"],
                 tmp_path / "run")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-pickle",))


def test_a_state_file_that_runs_code_is_refused(reviews, reference, tmp_path):
    import shutil

    import torch

    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    (run_dir / ".lock").unlink(missing_ok=True)
    target = latest_checkpoint(run_dir)
    torch.save({"progress": _Exploit()}, target / "state.pt")
    done = run_cli(args(reviews, run_dir, f"trainer.resume={target}"), cwd=tmp_path)
    assert done.returncode == 2 and "refused to load" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "pwned-by-pickle").exists()


def test_a_live_lock_refuses_a_second_run_and_a_stale_one_is_taken_over(reviews, reference, tmp_path):
    import shutil
    import socket

    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    lock = run_dir / ".lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": "now"}))
    busy = run_cli(args(reviews, run_dir, "trainer.resume=auto"), cwd=tmp_path)
    assert busy.returncode == 2 and f"is in use by pid {os.getpid()}" in busy.stderr
    lock.write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname(), "since": "long ago"}))
    taken = run_cli(args(reviews, run_dir, "trainer.resume=auto"), cwd=tmp_path)
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert not lock.exists()
