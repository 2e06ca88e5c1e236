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
from fmctl.checkpoint import check_run_dir_free
from fmctl.errors import ConfigError, FmctlError
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


DEFAULT_RECIPES = {"finetune": "bert_topics", "pretrain": "bert_mlm", "customize": "customize_bert_lora"}


def _verbs() -> dict[str, Callable[..., Any]]:
    """The training verbs and the spine function each runs: an explicit table."""
    from fmctl import pipeline

    return {"finetune": pipeline.finetune, "pretrain": pipeline.pretrain, "customize": pipeline.customize}


def run_training_verb(verb: str, args: list[str]) -> int:
    if verb == "customize":
        from fmctl.config.saved_runs import customize_invocation

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
    return _call_hydra(inv, overrides + [f"++run_dir={_quote(run_dir)}"], _job_function(verb, checked))


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
    from fmctl.supervise import supervise

    return supervise(command, run_dir)


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

    from fmctl.config.store import register

    register()
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


def _job_function(verb: str, checked: Any = None) -> Callable[[Any], Any]:
    """What Hydra runs per job. A single run reuses the config preflight validated when
    Hydra composed the same one (it always should), so it is validated once; each job of
    a sweep has its own config and is validated once, by itself."""
    def job(cfg: Any) -> Any:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return _run_job(verb, cfg, recorded=list(hc.overrides.task), validated=_same_config(checked, cfg))
        from omegaconf import OmegaConf

        run_dir = Path(hc.runtime.output_dir)
        OmegaConf.set_struct(cfg, False)
        cfg.run_dir = str(run_dir)
        cfg.overwrite = True  # Hydra made this job's folder; it is empty
        try:
            run = _validated(cfg)
            result = _run_job(verb, cfg, overrides=list(hc.overrides.task), validated=run)
            return _objective(run_dir, run, result)  # what a sweeper (Optuna) optimises
        except BaseException as exc:  # a failing job must not stop the sweep
            if isinstance(exc, KeyboardInterrupt):
                raise
            _record_failure(run_dir, exc, list(hc.overrides.task))
            print(f"job {hc.job.num} failed: {_one_line(exc)}", file=sys.stderr)
            return None  # the Optuna sweeper records a trial without a number as failed and goes on

    return job


def _same_config(checked: Any, cfg: Any) -> Any:
    """Preflight's validated run for this job's config, or None when Hydra composed
    something else (then the job validates its own)."""
    if checked is None or checked.run is None:
        return None
    import dataclasses

    from omegaconf import OmegaConf

    def plain(node: Any) -> dict[str, Any]:
        tree = OmegaConf.to_container(node, resolve=True)
        tree.pop("run_dir", None)
        return tree

    if plain(checked.config) != plain(cfg):
        return None
    return dataclasses.replace(checked.run, run_dir=cfg.run_dir)


def _validated(cfg: Any) -> Any:
    from fmctl.config.validate import validate

    return validate(cfg)


def _run_job(verb: str, cfg: Any, overrides: list[str] | None = None, recorded: list[str] | None = None,
             validated: Any = None) -> Any:
    """`overrides`: a sweep job's (its errors are raised for the sweep to record);
    `recorded`: a single run's, only for its manifest; `validated`: the job's config,
    already validated (else it is validated here)."""
    try:
        run = validated if validated is not None else _validated(cfg)
        return _verbs()[verb](run, cfg, overrides=overrides if overrides is not None else recorded)
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
    from fmctl import tasks
    from fmctl.loop.best import monitored

    metric, mode = monitored(tasks.create(run.task), run.trainer)
    return metric, "maximize" if mode == "max" else "minimize"


def _objective(run_dir: Path, run: Any, result: Any) -> float | None:
    """The monitored metric of a finished job, recorded in its manifest for the summary."""
    from fmctl.checkpoint import RunFolder

    metric, direction = objective_of(run)
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
    from fmctl.config.saved_runs import load_run_config

    _, run = load_run_config(run_dir, args)
    pipeline.evaluate_run(run_dir, run)
    return 0
