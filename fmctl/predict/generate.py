"""Text generation with a causal language model (a `fmctl pretrain task=clm` run, any
folder AutoModelForCausalLM loads, or its ONNX export): greedy decoding or sampling with
temperature, top-k and top-p, through transformers' generate() or onnxruntime."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmctl.errors import ConfigError, RunFolderError


@dataclass
class GenerationSettings:
    max_new_tokens: int = 50
    strategy: str = "greedy"        # greedy | sample
    temperature: float = 1.0
    top_k: int = 0                  # 0: no top-k cut
    top_p: float = 1.0              # 1.0: no nucleus cut
    seed: int = 0
    num_return_sequences: int = 1


def model_folder(target: Path) -> Path:
    """A run folder's model/, or the folder itself; it must hold a causal LM."""
    folder = target / "model" if (target / "model" / "config.json").is_file() else target
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise RunFolderError(f"{target}: no model/config.json; --prompt needs a causal language model "
                             f"(a fmctl pretrain task=clm run)")
    architectures = json.loads(config_file.read_text(encoding="utf-8")).get("architectures") or []
    if not any(name.endswith("ForCausalLM") or name.endswith("LMHeadModel") for name in architectures):
        raise RunFolderError(f"{target}: the model is {', '.join(architectures) or 'unknown'}, not a causal language "
                             f"model; --prompt generates text with GPT runs (fmctl pretrain recipe=gpt_clm)")
    return folder


def check_settings(settings: GenerationSettings) -> None:
    if settings.strategy not in ("greedy", "sample"):
        raise ConfigError(f"--strategy: expected greedy or sample, got '{settings.strategy}'")
    if settings.strategy == "greedy" and settings.num_return_sequences > 1:
        raise ConfigError("--num-return: greedy decoding returns one sequence; add --strategy sample")


def generate(target: Path, prompts: list[str], settings: GenerationSettings) -> list[dict[str, Any]]:
    """One record per prompt: {'prompt', 'generated'} (a list with num_return_sequences > 1)."""
    return load_generator(target)(prompts, settings)


def load_generator(target: Path) -> Any:
    """A callable (prompts, settings) -> records, loaded once: an ONNX export folder runs
    in onnxruntime, anything else (a run folder, an hf export, a model folder) in PyTorch."""
    target = Path(target)
    if not target.exists():
        raise RunFolderError(f"{target}: no such run folder or export folder")
    manifest_file = target / "export_manifest.json"
    if manifest_file.is_file() and json.loads(manifest_file.read_text(encoding="utf-8")).get("format") == "onnx":
        return OnnxGenerator(target)
    return TorchGenerator(model_folder(target))


def _room(prompt_ids: list[int], settings: GenerationSettings, max_positions: int | None) -> tuple[int, str | None]:
    """New tokens that fit in the model's position table after this prompt, or an error.
    Why: GPT-2's learned position embeddings end at n_positions; past them transformers
    and onnxruntime fail with an index error (for the whole batch), so a prompt that does
    not fit is a row error, and generation stops when the table is full."""
    if max_positions is None:
        return settings.max_new_tokens, None
    if len(prompt_ids) >= max_positions:
        return 0, (f"the prompt is {len(prompt_ids)} tokens; the model reads at most {max_positions} positions, "
                   f"so nothing fits after it; shorten the prompt")
    return min(settings.max_new_tokens, max_positions - len(prompt_ids)), None


def _record(prompt: str, texts: list[str], produced: int, room: int, settings: GenerationSettings) -> dict[str, Any]:
    record: dict[str, Any] = {"prompt": prompt, "generated": texts[0] if len(texts) == 1 else texts}
    if room < settings.max_new_tokens and produced >= room:
        record["stopped_at_max_positions"] = True  # cut short of --max-new-tokens by the position table
    return record


def _prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    # No special tokens: fmctl's BPE tokenizers close every input with end-of-text, which
    # would tell the model the document is over before it starts writing.
    ids = tokenizer(prompt, add_special_tokens=False, verbose=False)["input_ids"]  # length is checked by _room
    return ids or [tokenizer.eos_token_id]  # an empty prompt starts a new document


class TorchGenerator:
    """transformers' generate() on the model folder."""

    def __init__(self, folder: Path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from fmctl.models.text import _quiet_transformers

        _quiet_transformers()
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)

    def __call__(self, prompts: list[str], settings: GenerationSettings) -> list[dict[str, Any]]:
        import torch

        check_settings(settings)
        tokenizer = self.tokenizer
        sampling = settings.strategy == "sample"
        options: dict[str, Any] = {"do_sample": sampling, "num_return_sequences": settings.num_return_sequences,
                                   "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
        if sampling:
            options.update(temperature=settings.temperature, top_k=settings.top_k or None, top_p=settings.top_p)
        records = []
        with torch.inference_mode():
            for prompt in prompts:
                torch.manual_seed(settings.seed)  # per prompt: its samples do not depend on the other prompts
                prompt_ids = _prompt_ids(tokenizer, prompt)
                room, error = _room(prompt_ids, settings, self.max_positions)
                if error:
                    records.append({"prompt": prompt, "error": error})
                    continue
                ids = torch.tensor([prompt_ids])
                outputs = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=room,
                                              **options)
                texts = [tokenizer.decode(seq[ids.shape[1]:], skip_special_tokens=True) for seq in outputs]
                records.append(_record(prompt, texts, outputs.shape[1] - ids.shape[1], room, settings))
        return records


class OnnxGenerator:
    """The same decoding over an ONNX export's full-sequence logits, in onnxruntime and
    numpy: greedy picks the argmax (so it matches transformers' greedy output token for
    token); sampling applies temperature, then top-k, then top-p, as transformers does,
    from numpy's generator seeded by --seed. The export holds no key/value cache, so each
    new token re-reads the whole sequence: fine for short continuations, slower than the
    PyTorch path for long ones."""

    def __init__(self, folder: Path):
        from transformers import AutoTokenizer

        from fmctl.export import manifest as manifest_mod
        from fmctl.predict.targets import onnx_runner

        manifest = manifest_mod.read(folder)
        from fmctl import tasks

        task = manifest.get("task")
        if task not in tasks.names() or tasks.declaration(task).serving.reads != "prompt":
            raise RunFolderError(f"{folder}: the export is a {manifest.get('task')} model, not a causal language "
                                 f"model; --prompt generates text with GPT runs (fmctl pretrain recipe=gpt_clm)")
        self.run, _ = onnx_runner(folder, manifest, [])  # the same session predict uses for every export
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder / manifest["preprocessing"]["tokenizer"]))
        # exports made before max_positions was recorded: the tokenizer's limit (the training length)
        limit = manifest.get("postprocessing", {}).get("max_positions") or manifest["preprocessing"].get("max_length")
        self.max_positions = int(limit) if limit else None
        cache = manifest.get("kv_cache") or {}
        self.cached = None
        if cache.get("written") and (folder / cache["file"]).is_file():
            from fmctl.export.onnx import session

            self.cached = session(folder / cache["file"])
            self.layers, self.heads, self.head_dim = int(cache["layers"]), int(cache["heads"]), int(cache["head_dim"])

    def _next_logits(self, rows: Any) -> Any:
        import numpy as np

        return self.run({"input_ids": rows, "attention_mask": np.ones_like(rows)})[0][:, -1, :].astype(np.float64)

    def _stepper(self, prompt_rows: Any) -> Any:
        """rows -> next-token logits. With the export's key/value cache graph each step
        feeds only the tokens added since the last one; without it, the whole sequence."""
        import numpy as np

        if self.cached is None:
            return self._next_logits
        from fmctl.export.kv_cache import step_feed

        state = {"seen": 0, "past": [np.zeros((len(prompt_rows), self.heads, 0, self.head_dim), dtype=np.float32)
                                     for _ in range(2 * self.layers)]}

        def step(rows: Any) -> Any:
            feed = step_feed(rows[:, state["seen"]:], state["seen"], state["past"], self.layers)
            outputs = self.cached.run(None, feed)
            state["seen"], state["past"] = rows.shape[1], outputs[1:]
            return outputs[0][:, -1, :].astype(np.float64)

        return step

    def __call__(self, prompts: list[str], settings: GenerationSettings) -> list[dict[str, Any]]:
        import numpy as np

        check_settings(settings)
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        records = []
        for prompt in prompts:
            rng = np.random.default_rng(settings.seed)  # per prompt, as the PyTorch path
            prompt_ids = _prompt_ids(self.tokenizer, prompt)
            room, error = _room(prompt_ids, settings, self.max_positions)
            if error:
                records.append({"prompt": prompt, "error": error})
                continue
            rows = np.array([prompt_ids] * settings.num_return_sequences, dtype=np.int64)
            finished = np.zeros(len(rows), dtype=bool)
            step = self._stepper(rows)
            for _ in range(room):
                logits = step(rows)
                chosen = (logits.argmax(-1) if settings.strategy == "greedy"
                          else np.array([_sample(row, settings, rng) for row in logits]))
                chosen = np.where(finished, pad, chosen)
                rows = np.concatenate([rows, chosen[:, None]], axis=1)
                finished |= chosen == eos
                if finished.all():
                    break
            texts = [self.tokenizer.decode(row[len(prompt_ids):].tolist(), skip_special_tokens=True) for row in rows]
            records.append(_record(prompt, texts, rows.shape[1] - len(prompt_ids), room, settings))
        return records


def _sample(logits: Any, settings: GenerationSettings, rng: Any) -> int:
    """One token from a row of next-token logits: temperature, top-k, top-p, then a draw."""
    import numpy as np

    scores = logits / settings.temperature
    if settings.top_k:
        kth = np.sort(scores)[-min(settings.top_k, len(scores))]
        scores = np.where(scores < kth, -np.inf, scores)
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    if settings.top_p < 1.0:
        order = np.argsort(-probs)
        # keep the most likely tokens until their mass reaches top_p (the one crossing it too)
        outside = np.cumsum(probs[order]) - probs[order] >= settings.top_p
        probs[order[outside]] = 0.0
        probs /= probs.sum()
    return int(rng.choice(len(probs), p=probs))


class Translator:
    """Translation / seq2seq predictions: the task's own `translate` (fmctl.tasks.seq2seq),
    from a run folder's model/ or an hf export's model/ folder with the settings its
    manifest records. Values are {'source': text}; one {'translation': ...} each."""

    def __init__(self, model_dir: Path, task_cfg: Any, max_source: int):
        from fmctl.tasks import get_task

        self.task = get_task(task_cfg)
        self.task.attach(model_dir)
        self.model = self.task.load_model(model_dir).eval()
        self.max_source = max_source

    @classmethod
    def from_run(cls, folder: Path, run: Any) -> "Translator":
        return cls(folder / "model", run.task, run.data.max_length)

    @classmethod
    def from_manifest(cls, folder: Path, manifest: dict[str, Any]) -> "Translator":
        from fmctl.tasks.seq2seq import GenerationConfig, Seq2SeqTaskConfig

        post = manifest["postprocessing"]
        cfg = Seq2SeqTaskConfig(name=manifest["task"], separator=post["separator"], source_prefix=post["source_prefix"],
                                generation=GenerationConfig(**post["generation"]))
        return cls(folder / manifest["files"]["model_folder"], cfg, int(manifest["preprocessing"]["max_length"]))

    def __call__(self, values: list[dict[str, Any]]) -> list[Any]:
        sources = [str(v["source"]) for v in values]
        results: list[Any] = ["empty source text" if not s.strip() else None for s in sources]
        kept = [i for i, r in enumerate(results) if r is None]
        if kept:
            for i, text in zip(kept, self.task.translate(self.model, [sources[i] for i in kept], self.max_source)):
                results[i] = {"translation": text}
            if self.task.last_cut:  # the model reads at most max_length tokens of a source: say so, with the count
                import sys

                print(f"predict: {self.task.last_cut} of {len(kept)} sources in this batch are longer than the "
                      f"run's data.max_length={self.max_source} tokens and were cut before translating",
                      file=sys.stderr)
        return results
