"""What every format's writer shares: the export options, the context it works in
(the run's model, its real validation batches, a scratch folder), and the parity check
that runs a candidate artefact next to the PyTorch model and records the figures.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fmctl.export import parity as parity_mod
from fmctl.export.io import Batch, ExportIO

DEFAULT_ATOL = 1e-4
DEFAULT_INT8_AGREEMENT = 0.95
# int8 may lose at most this many points of the task's validation metric (accuracy,
# exact span match, BLEU ...); "about 1 point": a smaller validation set may lose one
# example (see fmctl.export.int8.Verdict).
DEFAULT_MAX_METRIC_DROP = 1.0
# The most sensitive nodes int8 may keep in fp32 when it fails the checks with all of them quantized.
DEFAULT_MAX_FP32_NODES = 8


@dataclass
class ExportOptions:
    fmt: str
    quantize: str | None = None
    atol: float = DEFAULT_ATOL                    # fp32 outputs must agree this closely
    min_agreement: float | None = None            # None: report only (fp32); int8 default 0.95
    opset: int = 18
    exporter: str = "auto"                        # ONNX: auto | dynamo | torchscript
    max_examples: int = 512                       # validation examples compared
    batch_size: int = 32
    calibration_examples: int = 128               # int8-static: training examples
    benchmark: bool = False                       # latency figures without --quantize too
    threads: int | None = None                    # CPU threads for PyTorch and ONNX Runtime timing
    max_metric_drop: float = DEFAULT_MAX_METRIC_DROP  # int8: validation metric points it may lose
    max_fp32_nodes: int = DEFAULT_MAX_FP32_NODES  # int8: sensitive nodes it may keep in fp32 (0: none)
    int8_target: str = "auto"                     # int8 settings for: auto (this CPU) | vnni | avx2 | arm


@dataclass
class Context:
    io: ExportIO
    model: Any                                    # as the task loads it
    module: Any                                   # positional wrapper returning logits
    batches: list[Batch]
    options: ExportOptions
    log: Callable[[str], None]
    scratch: Path                                 # outside the export folder, removed afterwards
    _memo: dict[int, Any] = field(default_factory=dict, repr=False)

    def reference(self) -> Callable[[dict[str, Any]], Any]:
        import torch

        names = self.io.input_names()

        def run(inputs: dict[str, Any]) -> list[Any]:
            with torch.no_grad():
                return numpy_outputs(self.module(*[inputs[n] for n in names]))

        return run

    def reference_outputs(self) -> Callable[[dict[str, Any]], Any]:
        """The PyTorch outputs of the parity batches, computed once and remembered: every
        int8 attempt is compared with the same reference."""
        run = self.reference()

        def remembered(inputs: dict[str, Any]) -> list[Any]:
            key = id(inputs)
            if key not in self._memo:
                self._memo[key] = run(inputs)
            return self._memo[key]

        return remembered

    def example(self) -> tuple[Any, ...]:
        """Export example: two real examples of different lengths where possible, so no
        axis is specialised to 1 and padding is present."""
        batch = self.io.batch_of(2)
        names = self.io.input_names()
        return tuple(batch.inputs[n][:2] for n in names)


def numpy_outputs(out: Any) -> list[Any]:
    """A module's output(s) as a list of numpy arrays, in the task's output_names order."""
    if hasattr(out, "logits"):
        out = out.logits
    return [t.numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]


def torch_candidate(module: Any, names: list[str]) -> Callable[[dict[str, Any]], Any]:
    import torch

    def run(inputs: dict[str, Any]) -> list[Any]:
        with torch.no_grad():
            return numpy_outputs(module(*[inputs[n] for n in names]))

    return run


def ort_candidate(session: Any, names: list[str]) -> Callable[[dict[str, Any]], Any]:
    outputs = [o.name for o in session.get_outputs()]

    def run(inputs: dict[str, Any]) -> list[Any]:
        return session.run(outputs, {n: inputs[n].numpy() for n in names})

    return run


def check(ctx: Context, candidate: Callable[[dict[str, Any]], Any], name: str, atol: float | None,
          min_agreement: float | None) -> tuple[parity_mod.Parity, parity_mod.Comparison]:
    result, comparison = parity_mod.compare(ctx.batches, ctx.reference(), candidate, ("pytorch fp32", name),
                                            atol, min_agreement, ctx.io.measure())
    ctx.log(f"parity: {result.summary()}")
    parity_mod.require(result)
    return result, comparison


def parity_record(ctx: Context, result: Any) -> dict[str, Any]:
    """The parity result for the manifest, with the split its examples came from."""
    return {**result.as_dict(), "split": ctx.io.parity_split}


def evaluation(ctx: Context, comparisons: dict[str, parity_mod.Comparison]) -> dict[str, Any]:
    first = next(iter(comparisons.values()))
    accuracy = {"pytorch_fp32": first.accuracy("reference")}
    accuracy.update({name: c.accuracy("candidate") for name, c in comparisons.items()})
    return {"split": ctx.io.parity_split, "examples": first.result.examples, "metric": first.measure.metric,
            "accuracy": accuracy}


def declared_io(ctx: Context) -> dict[str, Any]:
    return {"inputs": ctx.io.input_specs(), "outputs": ctx.io.output_specs()}
