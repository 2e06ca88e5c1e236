"""A trained run's result: the best weights into model/, its metrics recomputed as `fmctl
eval` computes them, the manifest completed, and for `fmctl customize` the comparison of
base and result."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from fmctl.checkpoint import RunFolder, replace_folder
from fmctl.config.schema import RunConfig


def fit_and_save(model: Any, task: Any, data: Any, run: RunConfig, folder: RunFolder | None, out: Any,
                 state: Any, dist: Any, custom: Any = None) -> tuple[Any, dict[str, float], dict[str, Any] | None]:
    """Train, then (on rank 0) put the best weights in model/ and score the test split;
    customised models are finalised first (LoRA merged, pruning masks made permanent)."""
    from fmctl.loop.faults import Faults
    from fmctl.loop.fit import fit

    result = fit(model, task, data, run, folder, out, resume=state, dist=dist,
                 loss_hook=custom.loss_hook() if custom is not None else None,
                 hooks=Faults.from_env().installed_in(folder))
    metrics = dict(result.best_metrics)
    metrics.pop("epoch", None)
    if folder is None:
        return result, metrics, None
    if dist.enabled and run.trainer.strategy == "fsdp":
        model = task.build_model(run, data)  # unsharded, to receive the gathered weights
    if result.best_step is not None:
        folder.load_weights("best", model)
    elif (folder.checkpoints_dir / "final").is_dir():
        folder.load_weights("final", model)
    if custom is not None:
        model = custom.finalize(model, folder.path)
    save_model_atomically(task, model, data, folder)
    metrics.update(fp32_metrics(model, task, data, run, result))
    folder.update_manifest(status="completed", metrics=metrics, steps=result.steps, epochs=result.epochs,
                           model_step=result.best_step if result.best_step is not None else result.steps,
                           precision=result.precision, device=result.device, kernels=result.kernels,
                           dropout_masks=result.dropout_masks, stopped_early=result.stopped_early,
                           nonfinite_skipped=result.nonfinite_skipped, processes=run.trainer.nproc,
                           strategy=run.trainer.strategy, train_seconds=round(result.train_seconds, 2))
    comparison = customize_report(custom, model, task, data, run, folder) if custom is not None else None
    return result, metrics, comparison


def fp32_metrics(model: Any, task: Any, data: Any, run: RunConfig, result: Any) -> dict[str, float]:
    """model/'s validation (when training ran in lower precision) and test metrics in fp32,
    as `fmctl eval` computes them. Why: evaluations during training run in the training
    precision (bf16 rounds regression outputs and changes generated text), which picks the
    best step but would not be reproducible."""
    from fmctl.loop.fit import evaluate, make_loader
    from fmctl.loop.precision import Precision

    full = Precision("fp32", result.device)
    batch = run.trainer.eval_batch_size or run.trainer.batch_size * 2
    metrics: dict[str, float] = {}
    if result.precision != "fp32" and result.best_step is not None and data.validation is not None \
            and len(data.validation):
        again = evaluate(model, task, make_loader(data.validation, batch, data.collate), result.device, full).compute()
        metrics.update({f"val/{k}": v for k, v in again.items()})
    if data.test is not None and len(data.test):
        test = evaluate(model, task, make_loader(data.test, batch, data.collate), result.device, full).compute()
        metrics.update({f"test/{k}": v for k, v in test.items()})
    return metrics


def save_model_atomically(task: Any, model: Any, data: Any, folder: RunFolder) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=folder.path))
    try:
        task.save_model(model, data, tmp)
        replace_folder(tmp, folder.model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def customize_report(custom: Any, model: Any, task: Any, data: Any, run: RunConfig,
                     folder: RunFolder) -> dict[str, Any]:
    """customize_report.json: the base and the customised model measured the same way."""
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
