"""Running a curve's cells: each one `fmctl finetune` (pipeline.finetune on the recipe
composed by Hydra with the shared overrides, then the cell's start, budget and seed),
launched as the jobs of one Hydra sweep so that launchers work as for sweeps
(hydra/launcher=joblib runs cells in parallel processes, slurm on a cluster).

A cell is a run folder, out/cells/<cell>/, trained with trainer.resume=auto: a finished
cell is not launched again, an interrupted one continues from its checkpoint, and a
failing one is recorded in its folder (manifest status, error.txt) while the others go on.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

from fmctl.curve.plan import Cell, Plan


def cell_dir(plan: Plan, cell: Cell) -> Path:
    return plan.out / "cells" / cell.name


def finished(plan: Plan, cell: Cell) -> bool:
    """Completed with exactly this cell's overrides (so a changed start is trained anew)."""
    manifest = cell_dir(plan, cell) / "manifest.json"
    if not manifest.is_file():
        return False
    record = json.loads(manifest.read_text(encoding="utf-8"))
    return record.get("status") == "completed" and record.get("overrides") == cell.overrides


def run_cells(plan: Plan, cells: list[Cell]) -> None:
    """Train `cells` as one Hydra sweep over their names."""
    from fmctl.config.compose import parse_invocation, preflight
    from fmctl.launch import _call_hydra

    if not cells:
        return
    inv = parse_invocation([f"recipe={plan.recipe_path}", *plan.words.finetune])
    checked = preflight(inv)
    inv.hydra_flags = ["-m"]
    sweep = [f"hydra.sweep.dir={_quoted(plan.out / 'cells')}", "hydra.sweep.subdir=${curve_cell}",
             "++curve_cell=" + ",".join(cell.name for cell in cells)]
    _call_hydra(inv, [*plan.words.hydra, *sweep, *checked.overrides], cell_job({c.name: c for c in cells}))


def _quoted(path: Path) -> str:
    return "'" + str(path.resolve()).replace("\\", "\\\\").replace("'", "\\'") + "'"


def cell_job(cells: dict[str, Cell]) -> Callable[[Any], Any]:
    """What Hydra runs per cell: the cell's settings on the composed config, validated,
    then the spine of `fmctl finetune`; a failure is recorded, never raised."""

    def job(cfg: Any) -> Any:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf, open_dict

        from fmctl import pipeline
        from fmctl.launch import _one_line, _record_failure, _validated

        run_dir = Path(HydraConfig.get().runtime.output_dir)
        cell = cells[str(cfg.curve_cell)]
        print(f"cell {cell.name}: {cell.start}, {cell.budget or 'all'} labels, seed {cell.seed}", file=sys.stderr)
        try:
            with open_dict(cfg):
                del cfg["curve_cell"]
                apply_overrides(cfg, cell.overrides)
                OmegaConf.update(cfg, "run_dir", str(run_dir), force_add=True)
                OmegaConf.update(cfg, "overwrite", False, force_add=True)
                OmegaConf.update(cfg, "trainer.resume", "auto", force_add=True)
            result = pipeline.finetune(_validated(cfg), cfg, overrides=cell.overrides)
            return result.metrics
        except BaseException as exc:  # a failing cell must not stop the curve
            if isinstance(exc, KeyboardInterrupt):
                raise
            _record_failure(run_dir, exc, cell.overrides)
            print(f"cell {cell.name} failed: {_one_line(exc)}", file=sys.stderr)
            return None

    return job


def apply_overrides(cfg: Any, overrides: list[str]) -> None:
    """key=value words (Hydra's syntax) set on a composed config, as `fmctl eval` applies
    its overrides to a saved one."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    parser = OverridesParser.create()
    for text in overrides:
        ov = parser.parse_overrides([text])[0]
        OmegaConf.update(cfg, ov.key_or_group, ov.value(), merge=False, force_add=True)
