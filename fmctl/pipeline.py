"""The spine: one short function per verb, one log line per stage.

These functions take validated configs and return what tests need, so tests can call
them without going through the CLI or Hydra.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmctl import __version__
from fmctl.checkpoint import RunFolder, replace_folder
from fmctl.config.schema import RunConfig
from fmctl.errors import DataError, ModelError, RunFolderError


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, float]
    fit: Any
    report: dict[str, Any] | None = None   # fmctl customize's base-vs-customised comparison


def finetune(run: RunConfig, raw_cfg: Any, overrides: list[str] | None = None, console: Any = None) -> RunResult:
    """Train a task head (and the backbone under it) on labelled data."""
    return train("finetune", run, raw_cfg, overrides, console)


def pretrain(run: RunConfig, raw_cfg: Any, overrides: list[str] | None = None, console: Any = None) -> RunResult:
    """Train a backbone on unlabelled data (MLM, CLM or MIM)."""
    return train("pretrain", run, raw_cfg, overrides, console)


def customize(run: RunConfig, raw_cfg: Any, overrides: list[str] | None = None, console: Any = None) -> RunResult:
    """Apply the listed customizations to the base model, train with the shared loop, and
    compare base and result (customize_report.json)."""
    import dataclasses

    from fmctl.errors import ConfigError

    if not run.base:
        raise ConfigError("base: required; the model to customise (base=RUN_DIR of an earlier run, or a "
                          "save_pretrained / timm folder)")
    run = dataclasses.replace(run, backbone=dataclasses.replace(run.backbone, pretrained=run.base))
    if hasattr(raw_cfg, "_metadata"):
        from omegaconf import OmegaConf, open_dict

        with open_dict(raw_cfg):
            OmegaConf.update(raw_cfg, "backbone.pretrained", run.base, force_add=True)
    return train("customize", run, raw_cfg, overrides, console)


def train(verb: str, run: RunConfig, raw_cfg: Any, overrides: list[str] | None = None,
          console: Any = None) -> RunResult:
    from fmctl import report
    from fmctl.loop import distributed
    from fmctl.models.groups import parameter_counts
    from fmctl.loop.fit import seed_everything
    from fmctl.tasks import get_task

    d = distributed.from_env()
    out = console or report.console()
    if not d.is_main:
        from rich.console import Console

        out = Console(quiet=True)  # one rank speaks
    if not run.run_dir:
        raise RunFolderError("run_dir: not set")
    run_dir = Path(distributed.broadcast(d, str(run.run_dir)))
    finished = _already_completed(run, run_dir)
    if finished is not None:
        out.print(report.metrics_table(finished["metrics"], f"best model, step {finished.get('model_step')}"))
        out.print(f"run folder: {run_dir} (completed at step {finished.get('steps')}; trainer.resume=auto has "
                  f"nothing to continue: raise trainer.max_steps or trainer.epochs to train longer)", soft_wrap=True)
        return RunResult(run_dir, finished["metrics"], None)
    checkpoint = resume_point(run, run_dir)
    seed_everything(run.trainer.seed)
    _check_verb(verb, run)
    task = get_task(run.task)
    _check_trainer_choices(run, task)

    started = time.perf_counter()
    data = task.prepare(run)
    _print_warnings(data, out)
    if data.train is None or len(data.train) == 0:
        raise DataError("data.train: no training examples")
    examples = {split: len(getattr(data, split)) for split in ("train", "validation", "test")
                if getattr(data, split) is not None}
    if run.trainer.drop_last and run.trainer.batch_size * d.world_size > len(data.train):
        raise DataError(f"trainer.batch_size: {run.trainer.batch_size} x {d.world_size} process(es) is more than the "
                        f"{len(data.train)} training examples and trainer.drop_last=true would drop every batch")
    labels = f", {len(data.label_names)} labels" if data.label_names else ""
    out.print(f"data: {' / '.join(f'{n} {split}' for split, n in examples.items())} examples{labels} "
              f"({time.perf_counter() - started:.1f}s)")
    if not examples.get("validation"):
        out.print("warning: no validation examples, so no evaluation: model/ will hold the last step's weights "
                  "and no metrics are reported (give data.validation, or a prepared corpus with validation_fraction > 0)",
                  soft_wrap=True)

    seed_everything(run.trainer.seed)
    model = task.build_model(run, data)
    _check_positions(run, model)
    custom = None
    if verb == "customize":
        from fmctl.customize import apply_all

        custom = apply_all(model, run, task, data, out)
        model = custom.model
    counts = parameter_counts(model)
    source = run.backbone.pretrained or f"random init, size {run.backbone.size}"
    out.print(f"model: {run.backbone.name} ({source}): {counts['total']:,} parameters"
              + (f"; {d.world_size} processes ({run.trainer.strategy})" if d.enabled else ""))

    state = None
    if checkpoint is not None:
        from fmctl.loop.state import load_state

        state = load_state(checkpoint / "state.pt")
        if (checkpoint / "model.safetensors").is_file():
            RunFolder(run_dir).load_weights(checkpoint.name, model)
        else:  # sharded (FSDP): weights and optimizer are read in fit, resharded to this world size
            state["dcp"] = str(checkpoint / "dcp")
    folder = None
    if d.is_main:
        try:
            folder = _open_run_folder(verb, run, raw_cfg, run_dir, checkpoint, data, counts, examples, overrides, out,
                                      custom.records if custom else [])
            failure = None
        except Exception as exc:  # the other ranks must hear of it rather than wait forever
            failure = exc
        distributed.broadcast(d, None if failure is None else f"{failure}")
        if failure is not None:
            raise failure
    else:
        message = distributed.broadcast(d, None)
        if message is not None:
            raise RunFolderError(f"rank 0 could not open the run folder: {message}")

    try:
        result, metrics, comparison = _fit_and_save(model, task, data, run, folder, out, state, d, custom)
    except BaseException as exc:
        from fmctl.loop.fit import Preempted

        if folder is not None:
            status = ("preempted" if isinstance(exc, Preempted) else
                      "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
            folder.update_manifest(status=status, error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}")
        raise
    finally:
        if folder is not None:
            folder.unlock()
    distributed.barrier(d)
    if metrics:
        out.print(report.metrics_table(metrics, f"best model, step {result.best_step}"))
    if comparison is not None:
        from fmctl.customize.report import table

        out.print(table(comparison))
    out.print(f"run folder: {run_dir}")
    return RunResult(run_dir, metrics, result, comparison)


def _open_run_folder(verb: str, run: RunConfig, raw_cfg: Any, run_dir: Path, checkpoint: Path | None, data: Any,
                     counts: dict[str, int], examples: dict[str, int], overrides: list[str] | None,
                     out: Any, customizations: list[dict[str, Any]] | None = None) -> RunFolder:
    if checkpoint is not None:
        folder = RunFolder.reopen(run_dir)
        _warn_on_changes(folder, raw_cfg, data, out)
        manifest = folder.update_manifest(status="running", resumed_from=str(checkpoint))
        folder.update_manifest(resumes=int(manifest.get("resumes", 0)) + 1)
        out.print(f"run folder: {folder.path} (resuming from {checkpoint.name})")
        return folder
    folder = RunFolder.create(run_dir, run.overwrite or run.trainer.resume == "auto")
    folder.write_config(raw_cfg)
    folder.update_manifest(
        status="running", fmctl_version=__version__, git_revision=_git_revision(), verb=verb,
        recipe=run.recipe, run_dir=str(folder.path), task=run.task.name, backbone=run.backbone.name,
        pretrained=run.backbone.pretrained, lineage=lineage(run.backbone.pretrained),
        label_names=data.label_names, parameters=counts, customizations=customizations or [], data=data.sources,
        overrides=overrides or [], examples=examples, started_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    out.print(f"run folder: {folder.path}")
    return folder


def _fit_and_save(model: Any, task: Any, data: Any, run: RunConfig, folder: RunFolder | None, out: Any,
                  state: Any, d: Any, custom: Any = None) -> tuple[Any, dict[str, float], dict[str, Any] | None]:
    """Train, then (on rank 0) put the best weights in model/ and score the test split;
    customised models are finalised first (LoRA merged, pruning masks made permanent)."""
    from fmctl.loop.faults import Faults
    from fmctl.loop.fit import evaluate, fit, make_loader

    result = fit(model, task, data, run, folder, out, resume=state, dist=d,
                 loss_hook=custom.loss_hook() if custom is not None else None,
                 hooks=Faults.from_env().installed_in(folder))
    metrics = dict(result.best_metrics)
    metrics.pop("epoch", None)
    if folder is None:
        return result, metrics, None
    if d.enabled and run.trainer.strategy == "fsdp":
        model = task.build_model(run, data)  # unsharded, to receive the gathered weights
    if result.best_step is not None:
        folder.load_weights("best", model)
    elif (folder.checkpoints_dir / "final").is_dir():
        folder.load_weights("final", model)
    if custom is not None:
        model = custom.finalize(model, folder.path)
    _save_model_atomically(task, model, data, folder)
    # The reported metrics are model/'s in fp32, as `fmctl eval` computes them: evaluations
    # during training run in the training precision (bf16 rounds regression outputs and
    # changes generated text), which picks the best step but would not be reproducible.
    from fmctl.loop.precision import Precision

    full = Precision("fp32", result.device)
    batch = run.trainer.eval_batch_size or run.trainer.batch_size * 2
    if result.precision != "fp32" and result.best_step is not None and data.validation is not None \
            and len(data.validation):
        again = evaluate(model, task, make_loader(data.validation, batch, data.collate), result.device, full).compute()
        metrics.update({f"val/{k}": v for k, v in again.items()})
    if data.test is not None and len(data.test):
        test = evaluate(model, task, make_loader(data.test, batch, data.collate), result.device, full).compute()
        metrics.update({f"test/{k}": v for k, v in test.items()})
    folder.update_manifest(status="completed", metrics=metrics, steps=result.steps, epochs=result.epochs,
                           model_step=result.best_step if result.best_step is not None else result.steps,
                           precision=result.precision, device=result.device, kernels=result.kernels,
                           dropout_masks=result.dropout_masks, stopped_early=result.stopped_early,
                           nonfinite_skipped=result.nonfinite_skipped, processes=run.trainer.nproc,
                           strategy=run.trainer.strategy, train_seconds=round(result.train_seconds, 2))
    comparison = None
    if custom is not None:
        comparison = _customize_report(custom, model, task, data, run, folder)
    return result, metrics, comparison


def _customize_report(custom: Any, model: Any, task: Any, data: Any, run: RunConfig,
                      folder: RunFolder) -> dict[str, Any]:
    from fmctl.customize import report
    from fmctl.models import pretrained

    base_weights = pretrained.resolve(run.base) if run.base else None
    comparison = {"base": report.describe(custom.base, task, data, run, base_weights if isinstance(base_weights, Path)
                                          else None),
                  "customized": report.describe(model, task, data, run, folder.model_dir),
                  "customizations": custom.records, "measured_on": "cpu, fp32, validation split"}
    if custom.records:  # what trained (after a merge every parameter of the saved model is plain again)
        comparison["customized"]["params_trainable"] = custom.records[-1]["trainable_after"]
    if (folder.path / "adapter").is_dir():
        comparison["customized"]["adapter_size_bytes"] = sum(
            p.stat().st_size for p in (folder.path / "adapter").rglob("*") if p.is_file())
    report.write(folder.path, comparison)
    folder.update_manifest(customize_report="customize_report.json")
    return comparison


def _check_verb(verb: str, run: RunConfig) -> None:
    from fmctl import tasks
    from fmctl.errors import ConfigError

    name = run.task.name
    pretraining = tasks.declaration(name).pretraining
    if verb == "pretrain" and not pretraining:
        raise ConfigError(f"task: '{name}' is not a pretraining objective; fmctl pretrain runs task=mlm (bert), "
                          f"clm (gpt) or mim (vit); fine-tune with fmctl finetune")
    if verb in ("finetune", "customize") and pretraining:
        raise ConfigError(f"task: '{name}' is a pretraining objective; run it with fmctl pretrain")
    if verb != "customize" and run.customize:
        raise ConfigError(f"customize: operations run with fmctl customize base=... (not fmctl {verb})")
    if verb == "customize" and run.trainer.strategy == "fsdp" and run.trainer.nproc > 1:
        raise ConfigError("trainer.strategy: fmctl customize runs with ddp or one process (the final model is "
                          "rebuilt unsharded under fsdp, without the customizations)")


def lineage(pretrained: str | None) -> list[dict[str, Any]]:
    """The chain of fmctl runs a backbone came from (a pretrain run, then ...), newest first."""
    if not pretrained:
        return []
    path = Path(pretrained).expanduser()
    for candidate in (path / "manifest.json", path.parent / "manifest.json"):
        if candidate.is_file():
            parent = json.loads(candidate.read_text(encoding="utf-8"))
            entry = {k: parent.get(k) for k in ("run_dir", "verb", "recipe", "task", "backbone", "fmctl_version")}
            entry["metrics"] = parent.get("metrics", {})
            return [entry, *parent.get("lineage", [])]
    return []


def _print_warnings(data: Any, out: Any) -> None:
    for warning in data.warnings:
        out.print(f"warning: {warning}")


def _check_trainer_choices(run: RunConfig, task: Any) -> None:
    """What can only be checked against the task or the machine, before any file is written."""
    from fmctl.errors import ConfigError
    from fmctl.loop.precision import pick_device

    pick_device(run.trainer.device)
    monitor = run.trainer.monitor
    allowed = [f"val/{name}" for name in task.metric_names]
    if monitor is not None and monitor not in allowed:
        from fmctl._suggest import did_you_mean

        raise ConfigError(f"trainer.monitor: '{monitor}' is not reported by task {task.name}"
                          f"{did_you_mean(monitor, allowed)}; choose one of {', '.join(allowed)}")


# Encoders whose learned positions start after the padding index (RoBERTa's embeddings).
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer",
                     "roberta-prelayernorm", "ibert", "markuplm", "mpnet"}


def _check_positions(run: RunConfig, model: Any) -> None:
    """Why: a pretrained checkpoint brings its own position table (GPT-2's n_positions, a
    RoBERTa's 514 minus its padding offset), and data.max_length is checked against
    backbone.max_positions only; a longer sequence then fails as an index error in the
    first step, after the run folder was made. Encoder-decoders (T5) have relative
    positions and no such table."""
    config = getattr(model, "config", None)
    table = getattr(config, "max_position_embeddings", None) if config is not None else None
    if not isinstance(table, int) or getattr(config, "is_encoder_decoder", False):
        return
    if getattr(config, "model_type", "") in _OFFSET_POSITIONS:
        table -= (getattr(config, "pad_token_id", None) or 0) + 1
    where = f"the pretrained '{run.backbone.pretrained}'" if run.backbone.pretrained else "the model"
    needs = [("data.max_length", "", run.data.max_length)]
    if run.task.name in ("translation", "seq2seq"):  # decoder-only: source, separator and target in one row
        needs = [("data.max_target_length", "data.max_length + data.max_target_length + 2 = ",
                  run.data.max_length + run.data.max_target_length + 2),
                 ("task.generation.max_new_tokens", "data.max_length + 1 + task.generation.max_new_tokens = ",
                  run.data.max_length + 1 + run.task.generation.max_new_tokens)]
    for key, sum_text, length in needs:
        if length > table:
            raise ModelError(f"{key}: {sum_text}{length} exceeds the {table} positions of {where}; "
                             f"lower {'it' if not sum_text else 'them'}")


def _already_completed(run: RunConfig, run_dir: Path) -> dict[str, Any] | None:
    """The manifest of a run that trainer.resume=auto would only redo: completed (early
    stopping included) with the same step budget. Why: a scheduler that requeues the same
    command must not retrain past an early stop or re-run the last steps and rewrite
    model/; raising max_steps or epochs still continues the run."""
    if run.trainer.resume != "auto" or not (run_dir / "manifest.json").is_file():
        return None
    from omegaconf import OmegaConf

    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    saved_file = run_dir / "config.yaml"
    if manifest.get("status") != "completed" or "metrics" not in manifest or not saved_file.is_file():
        return None
    saved = OmegaConf.load(saved_file).get("trainer", {})
    same_budget = (saved.get("max_steps") == run.trainer.max_steps and saved.get("epochs") == run.trainer.epochs)
    return manifest if same_budget else None


def resume_point(run: RunConfig, run_dir: Path) -> Path | None:
    """The checkpoint folder to continue from, or None to start fresh."""
    from fmctl.checkpoint import CHECKPOINT_FILES, checkpoint_complete, latest_checkpoint

    resume = run.trainer.resume
    if resume is None:
        return None
    if resume == "auto":
        found = latest_checkpoint(run_dir)
        if found is None and run_dir.is_dir() and any(run_dir.iterdir()):
            manifest = run_dir / "manifest.json"
            if not manifest.is_file():
                raise RunFolderError(f"run_dir: '{run_dir}' holds files but is not an fmctl run folder; "
                                     f"trainer.resume=auto will not replace it")
        return found
    path = Path(resume).expanduser()
    if not path.is_dir() or not checkpoint_complete(path):
        raise RunFolderError(f"trainer.resume: '{resume}' is not a complete checkpoint folder "
                             f"(needs {', '.join(CHECKPOINT_FILES)}); use trainer.resume=auto for the newest")
    if path.resolve().parent.parent != run_dir.resolve():
        raise RunFolderError(f"trainer.resume: '{resume}' belongs to '{path.parent.parent}', not to run_dir "
                             f"'{run_dir}'; drop run_dir= to continue that run")
    return path


# Keys that may change between an interrupted run and its resumption without a warning.
_RESUME_FREE_KEYS = {"trainer.resume", "trainer.progress", "trainer.num_threads", "trainer.max_steps",
                     "trainer.epochs", "trainer.log_every", "run_dir", "overwrite"}


def _global_batch(flat: dict[str, Any]) -> Any:
    return (flat.get("trainer.batch_size") or 0) * (flat.get("trainer.nproc") or 1)


def _warn_on_changes(folder: RunFolder, raw_cfg: Any, data: Any, out: Any) -> None:
    from omegaconf import OmegaConf

    from fmctl.paths import absolute_local_paths

    saved_file = folder.path / "config.yaml"
    if saved_file.is_file():
        saved = _flatten(OmegaConf.to_container(OmegaConf.load(saved_file), resolve=True))
        now = _flatten(absolute_local_paths(OmegaConf.to_container(raw_cfg, resolve=True)))
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in _RESUME_FREE_KEYS)
        if _global_batch(saved) == _global_batch(now):  # rank r takes positions r, r+N, ...: the same steps
            changed = [k for k in changed if k not in ("trainer.batch_size", "trainer.nproc")]
        if changed:
            out.print(f"warning: resuming with a config that differs from the run's config.yaml in: "
                      f"{', '.join(changed)}; the result will not match an uninterrupted run", soft_wrap=True)
    recorded = folder.read_manifest().get("data", {})
    for split, now in data.sources.items():
        before = recorded.get(split)
        if before and now and before.get("bytes") != now.get("bytes"):
            out.print(f"warning: {now['path']} changed size since the run started")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): tree}


def _save_model_atomically(task: Any, model: Any, data: Any, folder: RunFolder) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=folder.path))
    try:
        task.save_model(model, data, tmp)
        replace_folder(tmp, folder.model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def evaluate_run(run_dir: Path, run: RunConfig, raw_cfg: Any = None, console: Any = None) -> dict[str, Any]:
    """Score run_dir/model on data.test (or the run's validation split) and write run_dir/eval/."""
    from fmctl import report
    from fmctl.data.sources import split_paths
    from fmctl.evaluate.writer import write_eval_folder
    from fmctl.loop.fit import evaluate, make_loader
    from fmctl.loop.precision import Precision, pick_device
    from fmctl.tasks import get_task

    out = console or report.console()
    run_dir = Path(run_dir)
    model_dir = run_dir / "model"
    if not (model_dir / "config.json").is_file():
        raise RunFolderError(f"{run_dir}: no model/ folder with config.json; was the run completed?")
    task = get_task(run.task)
    split = "test" if split_paths(run.data).get("test") is not None else "validation"
    data = task.prepare(run, model_dir=model_dir, splits=(split,))
    _print_warnings(data, out)
    dataset = getattr(data, split)
    if dataset is None or len(dataset) == 0:
        raise DataError(f"data.{split}: no examples to evaluate")
    if (run_dir / "adapter").is_dir():  # LoRA kept as an adapter: the exact trained model
        from fmctl.customize.lora import load_adapter_model

        model = load_adapter_model(run_dir / "adapter", task)
        out.print(f"model: {run_dir / 'adapter'} on its base")
    else:
        model = task.load_model(model_dir)
    device = pick_device(run.trainer.device)
    model.to(device)
    # 'auto' evaluates in fp32: evaluation is cheap and gives reference numbers.
    precision = Precision("fp32" if run.trainer.precision == "auto" else run.trainer.precision, device)
    loader = make_loader(dataset, run.trainer.eval_batch_size or run.trainer.batch_size * 2, data.collate)
    metrics = evaluate(model, task, loader, device, precision)
    result = metrics.report()
    result["split"] = split
    write_eval_folder(run_dir / "eval", result, metrics, data.rows[split], task)
    flat = {k: v for k, v in result.items() if isinstance(v, (int, float))}
    out.print(report.metrics_table(flat, f"eval on {split} ({result['num_examples']} examples)"))
    for table in metrics.tables(result):
        out.print(table)
    out.print(f"written: {run_dir / 'eval'}")
    return result


def prepare_data(args: list[str], console: Any = None) -> int:
    """`fmctl data prepare`: validate the settings, prepare (or reuse) the corpus, report."""
    from fmctl import report
    from fmctl.config.compose import schema_from_overrides
    from fmctl.config.schema import PrepareConfig
    from fmctl.data.prepare import prepare_corpus, summary_lines

    out = console or report.console()
    cfg = schema_from_overrides(PrepareConfig, args)
    result = prepare_corpus(cfg, out)
    out.print(report.metrics_table(result.report, f"data prepare{' (cached)' if result.cached else ''}"))
    for line in summary_lines(result.report, cfg.txt_mode):
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    out.print(f"prepared corpus: {result.out}")
    return 0


def _git_revision() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return found.stdout.strip() or None if found.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
