"""`fmctl export`: run folder in, checked artefact folder out, or nothing at all.

The artefact is built in a temporary folder beside the target and renamed into place only
after every check passed; on any failure the temporary folder is removed and an earlier
export at the target is left as it was.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fmctl.checkpoint import replace_folder
from fmctl.errors import ExportError, RunFolderError
from fmctl.export import manifest as manifest_mod
from fmctl.export.formats import check_supported, folder_name
from fmctl.export.io import ExportIO
from fmctl.export.writers import WRITERS, Context, ExportOptions


@dataclass
class ExportResult:
    folder: Path
    manifest: dict[str, Any]


def export_run(run_dir: Path, options: ExportOptions, out: Path | None = None, overrides: list[str] | None = None,
               log: Callable[[str], None] = print) -> ExportResult:
    """Export run_dir/model in `options.fmt` to `out` (default RUN_DIR/export/<format>[-int8])."""
    from fmctl.config.saved_runs import load_run_config

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: no such run folder")
    _, run = load_run_config(run_dir, list(overrides or []))
    check_supported(options.fmt, run.task.name, options.quantize)
    _check_int8_target(options.int8_target)
    if not (run_dir / "model" / "config.json").is_file():
        raise RunFolderError(f"{run_dir}: no model/ folder with config.json; export needs a completed run "
                             f"(see manifest.json's status)")
    target = Path(out) if out is not None else run_dir / "export" / folder_name(options.fmt, options.quantize)
    _check_target(target)

    started = time.perf_counter()
    io = ExportIO(run, run_dir)
    model = io.load_model()
    batches = list(io.batches(options.batch_size, options.max_examples)) if len(io.serving.exported_graphs()) == 1 \
        else []
    log(f"export: {options.fmt}{' ' + options.quantize if options.quantize else ''} of {run_dir} "
        f"({run.task.name}, {io.num_examples()} validation examples, checking {min(io.num_examples(), options.max_examples)})")

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    scratch = Path(tempfile.mkdtemp(prefix="fmctl-export-"))
    try:
        record = manifest_mod.base(options.fmt, options.quantize, run_dir, run.task.name, io.label_names)
        graphs = io.serving.exported_graphs()
        if len(graphs) == 1:
            ctx = Context(io=io, model=model, module=io.module(model), batches=batches, options=options, log=log,
                          scratch=scratch)
            record["preprocessing"] = io.write_preprocessing(tmp)
            record.update(WRITERS[options.fmt](ctx, tmp))
        else:
            record.update(_several_graphs(io, model, graphs, options, log, tmp, scratch))
        record["postprocessing"] = io.postprocessing()
        record["seconds"] = round(time.perf_counter() - started, 2)
        manifest_mod.write(tmp, record)
        replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log(f"written: {target}")
    return ExportResult(target, record)


def _check_int8_target(name: str) -> None:
    from fmctl.export.quantize import TARGETS

    if name not in TARGETS:
        raise ExportError(f"--int8-target: unknown '{name}'; choose one of {', '.join(TARGETS)}")


def _several_graphs(io: ExportIO, model: Any, graphs: tuple[Any, ...], options: ExportOptions,
                    log: Callable[[str], None], tmp: Path, scratch: Path) -> dict[str, Any]:
    """Each graph (a two-tower model's image and text encoder) written and checked on its
    own by the format's writer: `graphs` in the manifest holds each one's entries (files,
    inputs, outputs, parity, evaluation, latency), `files` names every graph's file and
    `preprocessing` each graph's inputs (image transform, tokenizer)."""
    out: dict[str, Any] = {"files": {}, "preprocessing": {}, "graphs": {}}
    for graph in graphs:
        part = io.for_graph(graph)
        log(f"graph {graph.name}: {', '.join(part.input_names())} -> {', '.join(part.output_names)}")
        ctx = Context(io=part, model=model, module=part.module(model),
                      batches=list(part.batches(options.batch_size, options.max_examples)), options=options, log=log,
                      scratch=scratch)
        out["preprocessing"][graph.name] = part.write_preprocessing(tmp)
        entries = WRITERS[options.fmt](ctx, tmp)
        out["graphs"][graph.name] = entries
        out["files"][graph.name] = entries["files"]["model"]
    return out


def _check_target(target: Path) -> None:
    """An earlier export there is replaced; anything else is not ours to overwrite."""
    if target.exists() and not target.is_dir():
        raise RunFolderError(f"--out: '{target}' exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not (target / manifest_mod.MANIFEST).is_file():
        raise RunFolderError(f"--out: '{target}' holds files that are not an fmctl export; choose another folder")


