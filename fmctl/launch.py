"""Hand a verb's words to Hydra's runner and report the outcome.

Single runs and `-m` sweeps both go through `hydra.main`, so Hydra's launchers and
sweepers work unchanged. Each job validates its own config, writes its own run folder,
and in a sweep records a failure in that folder instead of stopping the sweep; the
summary table is read back from the run folders, so it works with launchers that run
jobs in other processes too.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from fmctl.config.compose import Invocation, parse_invocation, preflight, searchpath_override
from fmctl.errors import ConfigError, FmctlError, RunFolderError
from fmctl.loop.distributed import torchrun_command, under_torchrun


def _debug() -> bool:
    return os.environ.get("FMCTL_DEBUG") == "1"


def default_run_dir(recipe: str, suffix: str = "") -> Path:
    """runs/<recipe>/<timestamp>[suffix], made unique if two runs start in the same second."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    base = Path("runs") / recipe / f"{stamp}{suffix}"
    candidate, n = base, 1
    while candidate.exists():
        candidate = base.with_name(f"{base.name}-{n}")
        n += 1
    return candidate


def check_run_dir_free(run_dir: Path, overwrite: bool) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"run_dir: '{run_dir}' exists and is not a folder")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not overwrite:
        raise RunFolderError(f"run_dir: '{run_dir}' already holds files; choose another run_dir= "
                             f"or pass overwrite=true to replace them")


DEFAULT_RECIPES = {"finetune": "bert_topics", "pretrain": "bert_mlm", "customize": "customize_bert_lora"}


def run_training_verb(verb: str, args: list[str]) -> int:
    if verb == "customize":
        from fmctl.config.compose import customize_invocation

        args = customize_invocation(args)
    inv = parse_invocation(args, DEFAULT_RECIPES[verb])
    if inv.show_only:
        checked = preflight(inv, strict=False)
        return _call_hydra(inv, checked.overrides, _job_function(verb))
    checked = preflight(inv)
    nproc = int(inv.launch.get("nproc", checked.run.trainer.nproc))
    nnodes = int(inv.launch.get("nnodes", 1))
    if (nproc > 1 or nnodes > 1) and not under_torchrun():
        if inv.multirun:
            raise ConfigError("trainer.nproc: a sweep (-m) cannot also launch torchrun; run the sweep's jobs with a "
                              "launcher (hydra/launcher=joblib or slurm) and nproc=1, or one distributed run at a time")
        return _relaunch_under_torchrun(verb, inv, checked, nproc, nnodes)
    if inv.multirun:
        sweep_dir = Path(checked.run.run_dir) if checked.run.run_dir else default_run_dir(inv.recipe, "_sweep")
        check_run_dir_free(sweep_dir, checked.run.overwrite)
        extra = [f"hydra.sweep.dir={_quote(sweep_dir)}", "hydra.sweep.subdir=${hydra.job.num}",
                 *_sweeper_direction(inv, checked.run)]
        _call_hydra(inv, extra + checked.overrides, _job_function(verb))
        return _print_sweep_summary(sweep_dir)
    run_dir = Path(checked.run.run_dir) if checked.run.run_dir else _resume_run_dir(checked.run, inv.recipe)
    if checked.run.trainer.resume is None:
        check_run_dir_free(run_dir, checked.run.overwrite)
    overrides = [o for o in checked.overrides if not o.lstrip("+").startswith("run_dir=")]
    return _call_hydra(inv, overrides + [f"++run_dir={_quote(run_dir)}"], _job_function(verb))


def _relaunch_under_torchrun(verb: str, inv: Invocation, checked: Any, nproc: int, nnodes: int) -> int:
    """Run this same command in `nproc` processes per node under torchrun, all writing
    one run folder (decided here, once, so ranks never make one each)."""
    run = checked.run
    run_dir = Path(run.run_dir) if run.run_dir else _resume_run_dir(run, inv.recipe)
    if run.trainer.resume is None:
        check_run_dir_free(run_dir, run.overwrite)
    words = [f"recipe={inv.recipe_path}", *inv.hydra_flags,
             *[o for o in inv.overrides if not o.lstrip("+").startswith(("run_dir=", "trainer.nproc="))],
             f"run_dir={run_dir.resolve()}", f"trainer.nproc={nproc}"]
    command = torchrun_command(nproc, nnodes, int(inv.launch.get("node_rank", 0)), inv.launch.get("rdzv_endpoint"),
                               [verb, *words])
    print(f"launching {nproc} processes x {nnodes} node(s) under torchrun; run folder {run_dir}", file=sys.stderr)
    return _supervise(command, run_dir)


def _supervise(command: list[str], run_dir: Path) -> int:
    """Run torchrun in a session of its own and stand between it and the signals.

    A signal to torchrun makes it print a traceback and kill the ranks after a timeout, and
    a launcher that just dies leaves torchrun and the ranks training with nobody waiting
    for them. So the launcher takes SIGTERM, SIGINT (and SIGHUP, as SIGTERM) itself, for
    itself or for its whole process group, and forwards the first to the ranks, which
    finish the step, checkpoint and exit 0 (torchrun then has nothing to report); the
    manifest saying `preempted` turns that into PREEMPTED_EXIT here. A second signal ends
    torchrun and the ranks at once."""
    import signal
    import subprocess

    from fmctl.loop.preemption import LAUNCHER_ENV, PREEMPTED_EXIT

    received: list[int] = []

    def take(signum: int, frame: Any) -> None:
        received.append(signal.SIGTERM if signum == signal.SIGHUP else signum)

    caught = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, take) for sig in caught}
    try:
        proc = subprocess.Popen(command, env={**os.environ, LAUNCHER_ENV: str(os.getpid())},
                                start_new_session=True, preexec_fn=_die_with_parent)
        told: set[int] = set()  # ranks the first signal has reached
        while True:
            try:
                code = proc.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                pass
            if len(received) >= 2:
                return _stop_now(proc, received[1])
            if received and not Path("/proc").is_dir():  # no way to find the ranks: torchrun passes it on
                if not told:
                    _signal(-proc.pid, received[0])
                    told.add(proc.pid)
            elif received:  # ranks that start after the signal get it too (they hold it until training)
                for pid in set(_children(proc.pid)) - told:
                    _signal(pid, received[0])
                    told.add(pid)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code == 0 and _manifest_status(run_dir) == "preempted":
        return PREEMPTED_EXIT
    if code < 0:  # torchrun itself was killed
        return 128 - code
    return code


def _stop_now(proc: Any, signum: int) -> int:
    """Second signal: end torchrun first (so it reports nothing), then pass the signal to
    the ranks, which exit at once; SIGKILL whatever is still there after a few seconds."""
    import signal

    ranks = _children(proc.pid)
    _signal(-proc.pid, signal.SIGKILL)  # torchrun's own group: the ranks have sessions of their own
    proc.wait()
    for pid in ranks:
        _signal(pid, signum)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in ranks) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in ranks:
        if _alive(pid):
            _signal(-pid, signal.SIGKILL)  # the rank and its DataLoader workers
    return 128 + signum  # rank 0 has said "fmctl: interrupted" (SIGINT) or nothing (SIGTERM), as one process does


def _die_with_parent() -> None:
    """In torchrun, before it starts: SIGTERM it if the launcher dies (even by SIGKILL), so
    the ranks are checkpointed and stopped rather than left running (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _children(pid: int) -> list[int]:
    """The processes `pid` started (torchrun's ranks), from /proc."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except (OSError, ValueError):
        pass
    return found


def _alive(pid: int) -> bool:
    """Running, and not a zombie (nobody may reap the ranks of a killed torchrun)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _manifest_status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "manifest.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def _resume_run_dir(run: Any, recipe: str) -> Path:
    """trainer.resume=PATH without run_dir continues the run that checkpoint belongs to."""
    resume = run.trainer.resume
    if resume and resume != "auto":
        return Path(resume).expanduser().parent.parent
    return default_run_dir(recipe)


def _quote(path: Path) -> str:
    text = str(path)
    return text if all(c.isalnum() or c in "/._-" for c in text) else "'" + text.replace("'", "\\'") + "'"


def _call_hydra(inv: Invocation, overrides: list[str], job: Callable[[Any], Any]) -> int:
    import hydra

    argv = [
        "fmctl", *inv.hydra_flags,
        "--config-path", str(inv.recipe_path.parent), "--config-name", inv.recipe_path.stem,
        searchpath_override(),
        "hydra/job_logging=none", "hydra/hydra_logging=none",
        "hydra.output_subdir=null", "hydra.job.chdir=false", "hydra.run.dir=.",
        "hydra.job.name=fmctl", f"++recipe={inv.recipe}",
        *overrides,
    ]
    saved = sys.argv
    sys.argv = argv
    try:
        hydra.main(config_path=None, config_name=None, version_base=None)(job)()
    finally:
        sys.argv = saved
    return 0


def _job_function(verb: str) -> Callable[[Any], Any]:
    def job(cfg: Any) -> Any:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return _run_job(verb, cfg, recorded=list(hc.overrides.task))
        from omegaconf import OmegaConf

        run_dir = Path(hc.runtime.output_dir)
        OmegaConf.set_struct(cfg, False)
        cfg.run_dir = str(run_dir)
        cfg.overwrite = True  # Hydra made this job's folder; it is empty
        try:
            result = _run_job(verb, cfg, overrides=list(hc.overrides.task))
            return _objective(run_dir, cfg, result)  # what a sweeper (Optuna) optimises
        except BaseException as exc:  # a failing job must not stop the sweep
            if isinstance(exc, KeyboardInterrupt):
                raise
            _record_failure(run_dir, exc, list(hc.overrides.task))
            print(f"job {hc.job.num} failed: {_one_line(exc)}", file=sys.stderr)
            return None  # the Optuna sweeper records a trial without a number as failed and goes on

    return job


def _run_job(verb: str, cfg: Any, overrides: list[str] | None = None, recorded: list[str] | None = None) -> Any:
    """`overrides`: a sweep job's (its errors are raised for the sweep to record);
    `recorded`: a single run's, only for its manifest."""
    from fmctl import pipeline
    from fmctl.config.validate import validate

    try:
        run = validate(cfg)
        return getattr(pipeline, verb)(run, cfg, overrides=overrides if overrides is not None else recorded)
    except FmctlError as exc:
        if overrides is not None or _debug():
            raise
        from fmctl.loop.fit import Preempted
        from fmctl.loop.preemption import is_main_rank, under_launcher

        if isinstance(exc, Preempted) and not is_main_rank():
            raise SystemExit(0 if under_launcher() else exc.exit_code)  # rank 0 says it, with the checkpoint
        for line in exc.lines():
            print(f"error: {line}", file=sys.stderr)
        # Under the launcher a clean preemption exits 0, so torchrun reports no failure; the
        # launcher reads `preempted` from the manifest and exits PREEMPTED_EXIT itself.
        raise SystemExit(0 if isinstance(exc, Preempted) and under_launcher() else exc.exit_code)
    except Exception as exc:
        if overrides is not None or _debug():
            raise
        print(f"error: {_one_line(exc)} (rerun with --debug for the traceback)", file=sys.stderr)
        raise SystemExit(1)


def objective_of(run: Any) -> tuple[str, str]:
    """(metric, 'maximize'|'minimize'): the monitored metric and its direction."""
    from fmctl.loop.best import monitored
    from fmctl.tasks import get_task

    metric, mode = monitored(get_task(run.task), run.trainer)
    return metric, "maximize" if mode == "max" else "minimize"


def _objective(run_dir: Path, cfg: Any, result: Any) -> float | None:
    """The monitored metric of a finished job, recorded in its manifest for the summary."""
    from fmctl.checkpoint import RunFolder
    from fmctl.config.validate import validate

    metric, direction = objective_of(validate(cfg))
    value = float(result.metrics.get(metric, float("nan"))) if result is not None else float("nan")
    RunFolder(run_dir).update_manifest(objective={"metric": metric, "direction": direction, "value": value})
    return None if math.isnan(value) else value


def _sweeper_direction(inv: Invocation, run: Any) -> list[str]:
    """hydra/sweeper=optuna without hydra.sweeper.direction: the direction of the metric
    fmctl reports as the objective (trainer.monitor, else the task's main metric)."""
    words = inv.hydra_flags + inv.overrides
    if not any(w.lstrip("+").startswith("hydra/sweeper=optuna") for w in words):
        return []
    if any(w.lstrip("+").startswith("hydra.sweeper.direction=") for w in words):
        return []
    return [f"hydra.sweeper.direction={objective_of(run)[1]}"]


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, FmctlError):
        return "; ".join(exc.lines())
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _record_failure(run_dir: Path, exc: BaseException, overrides: list[str]) -> None:
    import traceback

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "error.txt").write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
    manifest = run_dir / "manifest.json"
    record = json.loads(manifest.read_text()) if manifest.is_file() else {}
    record.update(status="failed", error=_one_line(exc), overrides=overrides)
    manifest.write_text(json.dumps(record, indent=2), encoding="utf-8")


def _print_sweep_summary(sweep_dir: Path) -> int:
    from fmctl.report import print_sweep_summary

    return print_sweep_summary(sweep_dir)


def run_eval(run_dir: Path, args: list[str]) -> int:
    from fmctl import pipeline
    from fmctl.config.compose import load_run_config

    raw, run = load_run_config(run_dir, args)
    pipeline.evaluate_run(run_dir, run, raw)
    return 0
