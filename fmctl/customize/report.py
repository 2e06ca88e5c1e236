"""customize_report.json: the base and the customised model side by side, measured the
same way on the same validation data: parameters (total, trainable), size on disk,
sparsity, forward FLOPs and CPU latency at batch 1 and 32, and the task metric."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fmctl.backbones import structure_of
from fmctl.models.groups import parameter_counts

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")


def sparsity(model: Any, backbone: str) -> dict[str, float]:
    """Exactly-zero fraction of the transformer blocks' weight matrices (every stack the
    family `backbone` declares), and of all parameters."""
    stacks = tuple(s + "." for s in structure_of(model, backbone).stacks)
    zeros = total = all_zeros = all_total = 0
    for name, param in model.named_parameters():
        n, z = param.numel(), int((param.detach() == 0).sum())
        all_total += n
        all_zeros += z
        if param.ndim >= 2 and stacks and name.startswith(stacks):
            total += n
            zeros += z
    return {"sparsity": round(zeros / total, 6) if total else 0.0,
            "zeros_all": round(all_zeros / all_total, 6) if all_total else 0.0}


def size_on_disk(folder: Path | None) -> int | None:
    if folder is None:
        return None
    folder = Path(folder)
    if folder.is_file():
        return folder.stat().st_size
    files = [folder / n for n in WEIGHT_FILES if (folder / n).is_file()]
    return sum(f.stat().st_size for f in files) if files else None


def _examples(dataset: Any, n: int) -> list[Any]:
    return [dataset[i % len(dataset)] for i in range(n)]


def describe(model: Any, task: Any, data: Any, run: Any, weights: Path | None) -> dict[str, Any]:
    """Measure one model on the CPU in fp32."""
    from fmctl.loop.fit import evaluate, make_loader
    from fmctl.loop.precision import Precision

    model = model.to("cpu").eval()
    counts = parameter_counts(model)
    row: dict[str, Any] = {"params_total": counts["total"], "params_trainable": counts["trainable"],
                           "size_bytes": size_on_disk(weights), **sparsity(model, run.backbone.name)}
    validation = data.validation
    if validation is not None and len(validation):
        row.update(cost(model, task, data, run))
        loader = make_loader(validation, run.trainer.eval_batch_size or run.trainer.batch_size * 2, data.collate)
        metrics = evaluate(model, task, loader, "cpu", Precision("fp32", "cpu")).compute()
        row.update({f"val/{k}": v for k, v in metrics.items()})
    return row


def cost(model: Any, task: Any, data: Any, run: Any) -> dict[str, Any]:
    """Forward FLOPs (counted) and, with report.latency, CPU latency (measured) of the
    first 1 and 32 validation examples, the same batches for base and customised model."""
    import torch

    from fmctl.customize.flops import forward_flops
    from fmctl.export.measure import latency_ms

    row: dict[str, Any] = {}
    for size in (1, 32):
        batch = data.collate(_examples(data.validation, size))
        batch.pop("num_tokens", None)
        batch.pop("labels", None)

        def call(batch: Any = batch) -> None:
            with torch.inference_mode():
                task.forward(model, batch)

        row[f"flops_batch_{size}"] = forward_flops(call)
        if run.report.latency:
            repeats = run.report.repeats
            row[f"latency_batch_{size}_ms"] = latency_ms(call, min_runs=repeats, min_seconds=0.0, max_runs=repeats,
                                                         warmup=1)
    return row


def measured_on() -> str:
    """The CPU the latencies were measured on, its thread count and the precision."""
    import platform

    import torch

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            name = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), name)
    except OSError:
        pass
    return f"cpu ({name}, {torch.get_num_threads()} threads), fp32, validation split"


ROWS = [("params_total", "parameters", "{:,}"), ("params_trainable", "trainable", "{:,}"),
        ("size_bytes", "size on disk (MB)", None), ("sparsity", "sparsity (block weights)", "{:.4f}"),
        ("zeros_all", "zero fraction (all)", "{:.4f}"), ("flops_batch_1", "forward GFLOPs @1", "{:.4g}"),
        ("flops_batch_32", "forward GFLOPs @32", "{:.4g}"), ("latency_batch_1_ms", "CPU latency @1 (ms)", "{:.2f}"),
        ("latency_batch_32_ms", "CPU latency @32 (ms)", "{:.2f}")]


def _show(key: str, fmt: str | None, value: Any) -> str:
    if value is None:
        return "-"
    if key == "size_bytes":
        return f"{value / 1e6:.3f}"
    if key.startswith("flops_"):
        value = value / 1e9
    return fmt.format(value) if fmt else str(value)


def table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    base, custom = report["base"], report["customized"]
    title = f"customize: {' -> '.join(r['op'] for r in report['customizations']) or 'no operations'}"
    out = Table(title=title, title_justify="left", min_width=len(title) + 4)
    for column in ("", "base", "customized"):
        out.add_column(column, justify="left" if not column else "right")
    metric_keys = [k for k in custom if k.startswith("val/")]
    for key, label, fmt in ROWS + [(k, k, "{:.4f}") for k in metric_keys]:
        if key in base or key in custom:
            out.add_row(label, _show(key, fmt, base.get(key)), _show(key, fmt, custom.get(key)))
    return out


def write(run_dir: Path, report: dict[str, Any]) -> Path:
    from fmctl.checkpoint import atomic_write_text

    path = Path(run_dir) / "customize_report.json"
    atomic_write_text(path, json.dumps(report, indent=2, default=str))
    return path
