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
    longer = [a for a in args(reviews, run_dir, "trainer.resume=auto") if not a.startswith("trainer.max_steps")]
    longer.append(f"trainer.max_steps={STEPS + 1}")  # a completed run with the same budget has nothing to resume
    busy = run_cli(longer, cwd=tmp_path)
    assert busy.returncode == 2 and f"is in use by pid {os.getpid()}" in busy.stderr
    lock.write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname(), "since": "long ago"}))
    taken = run_cli(longer, cwd=tmp_path)
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert not lock.exists()


def test_a_changed_learning_rate_applies_after_resume(reviews, tmp_path, monkeypatch):
    """What the non-finite-loss message advises: lower optim.lr, resume. The checkpoint's
    optimizer and scheduler state must not bring the old rate back."""
    from fmctl.loop.fit import NonFiniteLoss

    common = [f"data.train={reviews['train']}", *TEXT_IN_PROCESS, "sched=constant", "sched.warmup_steps=0",
              "trainer.checkpoint_every=2", "trainer.on_nonfinite=stop", "optim.lr=1e-3",
              "optim.layer_decay=0.5", "optim.head_lr_mult=10"]
    monkeypatch.setenv("FMCTL_FAULT_NONFINITE", "5")
    with pytest.raises(NonFiniteLoss):
        finetune("text_csv", common, tmp_path / "run")
    monkeypatch.delenv("FMCTL_FAULT_NONFINITE")
    import shutil

    shutil.copytree(tmp_path / "run", tmp_path / "same_lr")
    finetune("text_csv", [*common, "trainer.resume=auto", "optim.lr=1e-4"], tmp_path / "run")
    finetune("text_csv", [*common, "trainer.resume=auto"], tmp_path / "same_lr")
    lrs = {r["step"]: r["lr"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["event"] == "train"}
    # logged: optim.lr times the schedule (constant), whatever the per-group scales
    assert lrs[4] == pytest.approx(1e-3) and lrs[5] == lrs[6] == pytest.approx(1e-4), lrs
    lowered, kept = (weights(tmp_path / name / "model" / "model.safetensors") for name in ("run", "same_lr"))
    assert any(not lowered[k].equal(kept[k]) for k in kept)  # the optimizer really stepped at another rate


def test_configured_hyperparameters_replace_the_checkpoint_ones():
    import torch

    from fmctl.loop.optim import apply_configured_hyperparameters, configured_hyperparameters

    def make(lr, decay):
        param = torch.nn.Parameter(torch.ones(3))
        optimizer = torch.optim.AdamW([{"params": [param], "lr": lr * 10}, {"params": [], "lr": lr}], lr=lr,
                                      weight_decay=decay)
        return param, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))

    param, optimizer, scheduler = make(1e-3, 0.1)
    param.grad = torch.ones(3)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    _, resumed, resumed_scheduler = make(1e-4, 0.0)
    configured = configured_hyperparameters(resumed)
    resumed.load_state_dict(optimizer.state_dict())
    resumed_scheduler.load_state_dict(scheduler.state_dict())
    assert resumed.param_groups[0]["lr"] == pytest.approx(1e-2 / 4)  # the checkpoint's, before the fix-up
    apply_configured_hyperparameters(resumed, resumed_scheduler, configured)
    assert [g["lr"] for g in resumed.param_groups] == pytest.approx([1e-3 / 4, 1e-4 / 4])
    assert resumed.param_groups[0]["weight_decay"] == 0.0 and resumed_scheduler.get_last_lr()[0] == pytest.approx(1e-3 / 4)
    assert resumed.state_dict()["state"][0]["step"] == 3  # the moments and counts stay the checkpoint's
    same, same_scheduler = make(1e-3, 0.1)[1:]
    kept = configured_hyperparameters(same)
    same.load_state_dict(optimizer.state_dict())
    same_scheduler.load_state_dict(scheduler.state_dict())
    before = [dict((k, v) for k, v in g.items() if k != "params") for g in same.param_groups]
    apply_configured_hyperparameters(same, same_scheduler, kept)
    assert [dict((k, v) for k, v in g.items() if k != "params") for g in same.param_groups] == before


def test_resume_auto_of_a_completed_run_changes_nothing_unless_the_budget_grows(reviews, reference, tmp_path):
    import hashlib
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    (run_dir / ".lock").unlink(missing_ok=True)
    files = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in run_dir.rglob("*") if p.is_file()}
    again = run_cli(args(reviews, run_dir, "trainer.resume=auto"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "nothing to continue" in again.stdout + again.stderr
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in run_dir.rglob("*") if p.is_file()} == files
    longer = run_cli([a for a in args(reviews, run_dir, "trainer.resume=auto") if not a.startswith("trainer.max_steps")]
                     + [f"trainer.max_steps={STEPS + 2}"], cwd=tmp_path)
    assert longer.returncode == 0, longer.stderr[-2000:]
    assert json.loads((run_dir / "manifest.json").read_text())["steps"] == STEPS + 2


def test_an_empty_lock_is_named_and_taken_over_once_old(tmp_path):
    from fmctl.checkpoint import LOCK_NAME, RunFolder
    from fmctl.errors import RunFolderError

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lock = run_dir / LOCK_NAME
    lock.write_text("")  # a process died between creating the lock and writing its record
    with pytest.raises(RunFolderError, match="has an empty or unreadable lock .* written less than 60 s ago"):
        RunFolder.reopen(run_dir)
    os.utime(lock, (time.time() - 3600, time.time() - 3600))
    folder = RunFolder.reopen(run_dir)
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    folder.unlock()
