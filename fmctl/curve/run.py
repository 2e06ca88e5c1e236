"""`fmctl report learning-curve`: plan (checked before anything trains), run the cells
not finished yet, then write learning_curve.json, learning_curve.md (the table and the
headline) and learning_curve.png beside them, and print the table."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fmctl.curve.plan import SETTINGS_FILE, check_folder, make_plan, settings_record


def learning_curve(args: list[str], console: Any = None) -> int:
    """Exit status: 0 when every cell completed, 1 when any failed (the rest still count)."""
    from fmctl import report
    from fmctl.checkpoint import atomic_write_text
    from fmctl.curve.cells import finished, run_cells
    from fmctl.curve.summary import collect, markdown

    out = console or report.console()
    plan = make_plan(args)
    check_folder(plan)
    for note in plan.notes:
        out.print(f"note: {note}", soft_wrap=True)
    atomic_write_text(plan.out / SETTINGS_FILE, json.dumps({"settings": settings_record(plan)}, indent=2))
    pending = [cell for cell in plan.cells if not finished(plan, cell)]
    reused = len(plan.cells) - len(pending)
    out.print(f"learning curve: {len(plan.starts)} start(s) x {len(plan.budgets)} budget(s) x {plan.cfg.seeds} "
              f"seed(s) = {len(plan.cells)} cells in {plan.out}; {reused} finished earlier (re-used), "
              f"{len(pending)} to run", soft_wrap=True)
    run_cells(plan, pending)
    summary = collect(plan)
    summary["reused_cells"] = reused
    atomic_write_text(plan.out / "learning_curve.json", json.dumps(summary, indent=2))
    text = markdown(summary)
    atomic_write_text(plan.out / "learning_curve.md", text)
    plot(summary, plan.out / "learning_curve.png")
    out.print(text, markup=False, highlight=False, soft_wrap=True)
    out.print(f"written: {plan.out / 'learning_curve.json'}, learning_curve.md, learning_curve.png", soft_wrap=True)
    failed = [c for c in summary["cells"] if c["status"] != "completed"]
    for cell in failed:
        out.print(f"cell {cell['cell']}: {cell['status']}: {cell['error'] or 'see its folder'}", soft_wrap=True,
                  markup=False)
    return 1 if failed else 0


def plot(summary: dict[str, Any], path: Path) -> None:
    """The metric against labels (log scale), one line per start, a band of ± one std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fmctl.evaluate.plots import save_figure

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for start in summary["starts"]:
        points = sorted((p for p in summary["points"] if p["start"] == start["label"] and p["mean"] is not None),
                        key=lambda p: p["labels"])
        if not points:
            continue
        x = [p["labels"] for p in points]
        y = [p["mean"] for p in points]
        line, = ax.plot(x, y, marker="o", label=start["label"])
        ax.fill_between(x, [m - p["std"] for m, p in zip(y, points)], [m + p["std"] for m, p in zip(y, points)],
                        color=line.get_color(), alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training examples")
    ax.set_ylabel(summary["metric"])
    ax.set_title(f"learning curve ({summary['task']}; band: ± 1 std over seeds)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
