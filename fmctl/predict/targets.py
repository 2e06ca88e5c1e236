"""What `fmctl predict TARGET` points at, opened into one callable shape.

A run folder is served by PyTorch through fmctl's own preprocessing; an export folder by
its format's runtime through the preprocessing its manifest describes: ONNX with ONNX
Runtime, `tokenizers`, Pillow and numpy only (torch is never imported), TorchScript with
torch.jit, an hf folder with transformers or timm. What predict reads for a task, and
how its outputs become predictions, is the task's declaration (serving.reads) and its
postprocessing; the formats it serves are PREDICT_FORMATS.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fmctl.errors import RunFolderError

PREDICT_FORMATS = ("onnx", "torchscript", "hf")


class _ColumnRoles:
    """The text columns a target reads by default, from its role -> column map."""

    columns: dict[str, str]

    @property
    def text_column(self) -> str | None:
        return self.columns.get("text")

    @property
    def text_pair_column(self) -> str | None:
        return self.columns.get("text_pair")


@dataclass
class TargetInputs(_ColumnRoles):
    """What a target reads, known from its config or manifest before its model is loaded,
    so that a wrong input (a missing column, one text for a pair model) is one line that
    costs no model load."""
    path: Path
    task: str
    input_kind: str                                # the task's serving.reads
    columns: dict[str, str]                        # role -> default input column (text kinds)
    # The record fields its decoder writes ("mask": files to write besides the predictions).
    output_columns: list[str] = field(default_factory=list)


BeforeLoad = Callable[[TargetInputs], None]


@dataclass
class Target(_ColumnRoles):
    path: Path
    description: str
    task: str
    label_names: list[str]
    input_kind: str                                # the task's serving.reads
    columns: dict[str, str]                        # role -> default input column (text kinds)
    predict: Callable[[list[Any]], list[Any]]      # values -> one record (dict) or error (str) each
    output_columns: list[str]                      # record fields, for CSV output


class Predictor:
    """encode -> run -> decode for one batch of values; rows that fail to encode keep their error."""

    def __init__(self, encode: Callable, run: Callable, decode: Callable):
        self.encode, self.run, self.decode = encode, run, decode

    def __call__(self, values: list[Any]) -> list[Any]:
        encoded = self.encode(values)
        feed, errors, meta = encoded if len(encoded) == 3 else (*encoded, None)
        results: list[Any] = [errors.get(i) for i in range(len(values))]
        kept = [i for i in range(len(values)) if i not in errors]
        if kept:
            for i, record in zip(kept, self.decode(values, self._run_in_chunks(feed), meta), strict=True):
                results[i] = record
        return results

    def _run_in_chunks(self, feed: dict[str, Any]) -> list[Any]:
        """The model over the feed's rows MAX_RUN_ROWS at a time. Why: --batch-size counts
        input rows, and one QA row with a long context makes a window per max_length tokens
        (a 2 MB context: 1,800 windows, 8.7 GB of activations in one call)."""
        import numpy as np

        rows = len(next(iter(feed.values())))
        if rows <= MAX_RUN_ROWS:
            return self.run(feed)
        parts = [self.run({name: value[start:start + MAX_RUN_ROWS] for name, value in feed.items()})
                 for start in range(0, rows, MAX_RUN_ROWS)]
        return [np.concatenate([part[k] for part in parts]) for k in range(len(parts[0]))]


# Model rows (examples, or QA windows) per runtime call, whatever the input batch holds.
MAX_RUN_ROWS = 64


def open_target(path: Path, before_load: BeforeLoad = lambda _inputs: None, generation: Any = None,
                threads: int | None = None) -> Target:
    """The target at path, ready to predict; `before_load` sees what it reads (and may
    raise) before any model or tokenizer is loaded. `generation` (GenerationSettings) is
    how a causal LM continues each text (default: greedy, 50 new tokens). `threads`: CPU
    threads for ONNX Runtime's session (and PyTorch's, for run folders and torch exports)."""
    path = Path(path)
    if not path.exists():
        raise RunFolderError(f"{path}: no such run folder or export folder")
    folder = path.parent if path.is_file() else path
    if path.is_file() and path.suffix not in (".onnx", ".pt"):
        raise RunFolderError(f"{path}: expected a run folder, an export folder or its model.onnx / model.pt")
    if (folder / "config.yaml").is_file() and (folder / "model").is_dir() and not path.is_file():
        if threads:
            _torch_threads(threads)
        return _run_folder(folder, before_load, generation)
    if (folder / "export_manifest.json").is_file() or any((folder / n).is_file() for n in ("model.onnx", "model.pt")):
        from fmctl.export import manifest as manifest_mod

        manifest = manifest_mod.read(folder)
        if threads and manifest.get("format") != "onnx":
            _torch_threads(threads)
        return _export_folder(folder, manifest, before_load, generation, threads)
    if (folder / "config.yaml").is_file():
        raise RunFolderError(f"{folder}: no model/ folder; was the run completed?")
    raise RunFolderError(f"{folder}: neither a run folder (config.yaml + model/) nor an export folder "
                         f"(export_manifest.json)")


def _check_task(task: str, where: Path) -> str:
    """What predict reads for the task (its declaration's serving.reads), or one line
    saying it serves no such task and what to do with the run instead."""
    from fmctl import tasks

    served = [name for name in tasks.names() if tasks.declaration(name).serving.reads]
    serving = tasks.declaration(task).serving if task in tasks.names() else None
    if serving is None or serving.reads is None:
        extra = f" ({serving.elsewhere})" if serving is not None and serving.elsewhere else ""
        raise RunFolderError(f"{where}: predict does not serve task '{task}'{extra}; it serves {', '.join(served)}")
    return serving.reads


def _columns(kind: str, prep: dict[str, Any]) -> dict[str, str]:
    if kind == "qa":
        return {"question": prep.get("question_column") or "question", "context": prep.get("context_column") or "context"}
    if kind == "words":
        return {"text": prep.get("tokens_column") or "tokens"}
    if kind == "source":
        return {"source": prep.get("source_column") or "source"}
    if kind == "prompt":
        return {"prompt": prep.get("text_column") or "text"}
    columns = {"text": prep.get("text_column") or "text"}
    if prep.get("text_pair_column"):
        columns["text_pair"] = prep["text_pair_column"]
    return columns


def _export_folder(folder: Path, manifest: dict[str, Any], before_load: BeforeLoad = lambda _inputs: None,
                   generation: Any = None, threads: int | None = None) -> Target:
    from fmctl.predict import decode, encode

    fmt, task = manifest.get("format"), manifest.get("task", "")
    kind = _check_task(task, folder)
    if fmt not in PREDICT_FORMATS:
        raise RunFolderError(f"{folder}: a '{fmt}' export cannot be served by predict (it serves "
                             f"{', '.join(PREDICT_FORMATS)} exports and run folders)")
    if kind == "source" and fmt not in ("hf", "onnx"):
        raise RunFolderError(f"{folder}: {task} translates with an onnx or hf export or its run folder")
    if kind == "prompt" and fmt not in ("hf", "onnx"):
        raise RunFolderError(f"{folder}: {task} generates with an hf or onnx export or its run folder")
    prep = manifest["preprocessing"]
    post = manifest.get("postprocessing") or {"kind": "softmax_label"}
    before_load(TargetInputs(folder, task, kind, _columns(kind, prep), _decoded_columns(post)))
    labels = list(manifest["label_names"])
    description = f"{fmt}{'-' + manifest['quantize'] if manifest.get('quantize') else ''} export"
    if kind == "source":
        if fmt == "onnx":  # torch-free: onnxruntime, tokenizers and numpy
            from fmctl.predict.translate import OnnxTranslator

            return Target(folder, f"{description} (onnxruntime, greedy)", task, [], kind, _columns(kind, prep),
                          OnnxTranslator(folder, manifest, threads), ["translation"])
        from fmctl.predict.generate import Translator

        translator = Translator.from_manifest(folder, manifest)
        return Target(folder, f"{description} (transformers generate)", task, [], kind, _columns(kind, prep),
                      translator, ["translation"])
    if kind == "prompt":
        model_dir = folder / manifest["files"]["model_folder"] if fmt == "hf" else folder
        return _prompt_target(folder, model_dir, description, task, prep, generation)
    names = [spec["name"] for spec in manifest["inputs"]]
    if kind == "text":
        encoder: Any = encode.LightTextEncoder(folder, prep, names)
    elif kind == "words":
        encoder = encode.LightWordEncoder(folder, prep, names)
    elif kind == "qa":
        encoder = encode.LightQAEncoder(folder, prep, names)
    elif prep.get("crop_mode", "center") in ("center", "squash"):
        encoder = encode.LightImageEncoder(prep)
    else:
        encoder = encode.ReferenceImageEncoder(prep)
    decoder = decode.DECODERS[post["kind"]](labels, {**post, "target_folder": str(folder)})
    runner, what = _RUNNERS[fmt](folder, manifest, names, threads) if fmt == "onnx" else \
        _RUNNERS[fmt](folder, manifest, names)
    return Target(folder, f"{description} ({what})", task, labels, kind, _columns(kind, prep),
                  Predictor(encoder, runner, decoder), decoder.columns)


def _decoded_columns(post: dict[str, Any]) -> list[str]:
    """The fields the decoder of this postprocessing writes (none for generating kinds)."""
    from fmctl.predict.decode import DECODERS

    decoder = DECODERS.get(post.get("kind", ""))
    return list(decoder.columns) if decoder is not None else []


def onnx_runner(folder: Path, manifest: dict[str, Any], names: list[str],
                threads: int | None = None) -> tuple[Callable, str]:
    """feed -> the manifest's outputs, in order, from an onnxruntime CPU session (predict's
    runner for ONNX exports, and the ONNX generator's); `threads` sets its intra-op threads
    (ONNX Runtime's default: every core)."""
    from fmctl.export.onnx import session as onnx_session

    session = onnx_session(folder / manifest["files"]["model"], threads)
    wanted = [i.name for i in session.get_inputs()]
    outputs = [o["name"] for o in manifest.get("outputs", [])] or None
    return (lambda feed: session.run(outputs, {n: feed[n] for n in wanted})), "onnxruntime"


def _torch_threads(threads: int) -> None:
    """PyTorch's CPU threads, for the targets that run in PyTorch (ONNX never imports it)."""
    import torch

    torch.set_num_threads(threads)


def _torchscript_runner(folder: Path, manifest: dict[str, Any], names: list[str]) -> tuple[Callable, str]:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice; the file is ours
        module = torch.jit.load(str(folder / manifest["files"]["model"]), map_location="cpu").eval()

    def run(feed: dict[str, Any]) -> list[Any]:
        with torch.no_grad():
            out = module(*[torch.from_numpy(feed[n]) for n in names])
        return [t.numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]

    return run, "torch.jit"


def _hf_runner(folder: Path, manifest: dict[str, Any], names: list[str]) -> tuple[Callable, str]:
    return _torch_runner(manifest["task"], folder / manifest["files"]["model_folder"]), manifest.get("library", "torch")


_RUNNERS = {"onnx": onnx_runner, "torchscript": _torchscript_runner, "hf": _hf_runner}


def _torch_runner(task: str, model_dir: Path) -> Callable[[dict[str, Any]], Any]:
    import torch

    from fmctl import tasks
    from fmctl.models.outputs import named_outputs

    model = tasks.create(tasks.default_config(task)).load_model(model_dir).eval()
    serving = tasks.declaration(task).serving
    text, outputs = serving.modality == "text", serving.outputs

    def run(feed: dict[str, Any]) -> list[Any]:
        with torch.no_grad():
            if text:
                result = model(**{k: torch.from_numpy(v) for k, v in feed.items()})
            else:
                result = model(torch.from_numpy(feed["pixel_values"]))
            return [value.float().numpy() for value in named_outputs(result, outputs)]

    return run


def _run_folder(folder: Path, before_load: BeforeLoad = lambda _inputs: None, generation: Any = None) -> Target:
    from fmctl import tasks
    from fmctl.config.saved_runs import load_run_config
    from fmctl.models.saved import saved_label_names
    from fmctl.predict import decode

    _, run = load_run_config(folder, [])
    model_dir = folder / "model"
    if not (model_dir / "config.json").is_file():
        raise RunFolderError(f"{folder}: no model/ folder with config.json; was the run completed?")
    task = run.task.name
    kind = _check_task(task, folder)
    data = run.data
    prep = {"text_column": data.text_column, "text_pair_column": data.text_pair_column,
            "tokens_column": data.tokens_column, "source_column": data.source_column}
    if kind == "source":
        before_load(TargetInputs(folder, task, kind, _columns(kind, prep), ["translation"]))
        from fmctl.predict.generate import Translator

        return Target(folder, "run folder (PyTorch, transformers generate)", task, [], kind, _columns(kind, prep),
                      Translator.from_run(folder, run), ["translation"])
    if kind == "prompt":
        before_load(TargetInputs(folder, task, kind, _columns(kind, prep), ["generated"]))
        return _prompt_target(folder, model_dir, "run folder (PyTorch)", task, prep, generation)
    labels = saved_label_names(model_dir)
    post = tasks.create(run.task).postprocessing(run, labels, model_dir)
    before_load(TargetInputs(folder, task, kind, _columns(kind, prep), _decoded_columns(post)))
    decoder = decode.DECODERS[post["kind"]](labels, {**post, "target_folder": str(folder)})
    return Target(folder, "run folder (PyTorch)", task, labels, kind, _columns(kind, prep),
                  Predictor(_reference_encoder(run, kind, model_dir), _torch_runner(task, model_dir), decoder),
                  decoder.columns)


def _reference_encoder(run: Any, kind: str, model_dir: Path) -> Any:
    """fmctl's own encoding for a run folder: the task's image preprocessing, or the saved tokenizer."""
    from fmctl import tasks
    from fmctl.predict import encode

    if kind == "image":
        return encode.ReferenceImageEncoder(tasks.create(run.task).image_preprocessing(run, model_dir))
    from fmctl.models.text import load_tokenizer_only

    tokenizer = load_tokenizer_only(model_dir)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    max_length = int(tokenizer.model_max_length)
    if kind == "words":
        return encode.ReferenceWordEncoder(tokenizer, max_length, names)
    if kind == "qa":
        return encode.ReferenceQAEncoder(tokenizer, max_length, int(run.task.doc_stride), names)
    return encode.ReferenceTextEncoder(tokenizer, max_length, run.data.text_pair_column is not None, names)


def _prompt_target(folder: Path, model_dir: Path, description: str, task: str, prep: dict[str, Any],
                   generation: Any = None) -> Target:
    """A causal LM continues each text with the given settings (--max-new-tokens,
    --strategy, ... as for --prompt; by default greedy, 50 new tokens)."""
    from fmctl.predict.generate import GenerationSettings, OnnxGenerator, load_generator

    generator = load_generator(model_dir)
    settings = generation or GenerationSettings()

    def run(values: list[dict[str, Any]]) -> list[Any]:
        records = generator([str(v["prompt"]) for v in values], settings)
        return [r["error"] if "error" in r else {k: v for k, v in r.items() if k != "prompt"} for r in records]

    how = "onnxruntime generate" if isinstance(generator, OnnxGenerator) else "transformers generate"
    return Target(folder, f"{description}, {how}", task, [], "prompt", _columns("prompt", prep), run, ["generated"])
