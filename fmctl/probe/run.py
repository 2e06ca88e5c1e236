"""`fmctl probe SOURCE [key=value ...]`: resolve the source, read the settings, embed (or
read the cached features), fit the linear and k-NN probes, write probe/metrics.json and
probe/table.md, print the table."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fmctl.errors import ConfigError


def probe(spec: str, args: list[str], console: Any = None) -> dict[str, Any]:
    """Run the probe; returns what metrics.json holds."""
    from fmctl import report
    from fmctl.probe.embed import features
    from fmctl.probe.fit import knn_probe, linear_probe
    from fmctl.probe.source import labelled_task_for, resolve_source

    out = console or report.console()
    source = resolve_source(spec)
    cfg, modality = _settings(source, args)
    if cfg.num_threads:
        import torch

        torch.set_num_threads(cfg.num_threads)
    folder = Path(cfg.out).expanduser() if cfg.out else source.default_out(cfg.init == "random")
    out.print(f"probe: {source.model_dir} ({source.family.name}, {modality}, {cfg.init} weights)", soft_wrap=True)
    started = time.perf_counter()
    found = features(source, cfg, modality, folder, out)
    pooling = _pooling(cfg.pooling, found.poolings)
    x = {split: vectors[pooling] for split, vectors in found.vectors.items()}
    out.print(f"features: {'cached' if found.cached else 'embedded'} in {found.folder} "
              f"({', '.join(f'{n} {s}' for s, n in ((s, len(v)) for s, v in found.labels.items()))}; width "
              f"{x['train'].shape[1]}; {time.perf_counter() - started:.1f}s)", soft_wrap=True)
    if "validation" not in x:
        raise ConfigError("data.validation: the probe chooses C on a validation split; give data.validation=FILE "
                          "or keep data.validation_fraction above 0")
    result = {"source": spec, "model_dir": str(source.model_dir), "family": source.family.name,
              "modality": modality, "init": cfg.init, "seed": cfg.seed, "pooling": pooling,
              "data_task": labelled_task_for(modality).name, "label_names": found.label_names,
              "examples": {split: int(len(labels)) for split, labels in found.labels.items()},
              "feature_width": int(x["train"].shape[1]), "features": str(found.folder),
              "reported_on": "test" if "test" in x else "validation",
              "linear": linear_probe(x, found.labels, list(cfg.C), cfg.max_iter),
              "knn": knn_probe(x, found.labels, cfg.k)}
    _write(folder, result)
    out.print(_table(result))
    out.print(f"written: {folder / 'metrics.json'}")
    return result


def _settings(source: Any, args: list[str]) -> tuple[Any, str]:
    """The validated ProbeConfig (a labelled run's own data under the overrides) and the
    modality probed; a source without labelled data needs data given."""
    from fmctl.config.compose import schema_from_overrides
    from fmctl.probe.config import ProbeConfig
    from fmctl.probe.source import data_of_source, labelled_task_for, modality_of

    first = schema_from_overrides(ProbeConfig, args)
    modality = modality_of(source, first.tower)
    own = data_of_source(source, labelled_task_for(modality))
    cfg = schema_from_overrides(ProbeConfig, args, base={"data": own}) if own is not None else first
    from fmctl.data.sources import uses_builtin

    if cfg.data.train is None and not uses_builtin(cfg.data):
        what = (f"a run of task '{source.task}'" if source.run_dir is not None else "a model folder without a run")
        example = "data=topics" if modality == "text" else "data=digits"
        raise ConfigError(f"data: {source.spec} is {what}, with no labelled {modality} data to probe on; give "
                          f"{example} or data.train=FILE (data.validation=, data.test= optional)")
    return cfg, modality


def _pooling(asked: str, offered: list[str]) -> str:
    if asked == "auto":
        return offered[0]
    if asked not in offered:
        raise ConfigError(f"pooling: '{asked}' is not offered by this backbone; choose {', '.join(['auto', *offered])}")
    return asked


def _write(folder: Path, result: dict[str, Any]) -> None:
    from fmctl.checkpoint import atomic_write_text

    atomic_write_text(folder / "metrics.json", json.dumps(result, indent=2))
    atomic_write_text(folder / "table.md", markdown_table(result))


def _rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    linear, knn = result["linear"], result["knn"]
    show = lambda value: f"{value:.4f}" if value is not None else "-"  # noqa: E731
    return [(f"linear (C={linear['C']:g})", show(linear["validation_accuracy"]), show(linear.get("test_accuracy")),
             "" if linear["converged"] else "did not converge: raise max_iter"),
            (f"k-NN (k={knn['k']}, cosine)", show(knn["validation_accuracy"]), show(knn.get("test_accuracy")), "")]


def markdown_table(result: dict[str, Any]) -> str:
    head = (f"probe of {result['source']} ({result['init']} weights, {result['pooling']} pooling, "
            f"{result['feature_width']} features)\n\n| probe | validation accuracy | test accuracy | note |\n"
            "|---|---|---|---|\n")
    return head + "".join(f"| {a} | {b} | {c} | {d} |\n" for a, b, c, d in _rows(result))


def _table(result: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"probe ({result['init']} weights, {result['pooling']} pooling, "
                        f"{result['feature_width']} features)", title_justify="left")
    for column in ("probe", "validation accuracy", "test accuracy", "note"):
        table.add_column(column, justify="right" if "accuracy" in column else "left")
    for row in _rows(result):
        table.add_row(*row)
    return table
