"""Pretraining objectives on prepared token shards: masked (BERT) and causal (GPT)
language modelling. The MLM head runs only on the masked positions, so the vocabulary
projection costs 15% of what a full-sequence head would."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fmctl import backbones
from fmctl.config.schema import RunConfig, bounded
from fmctl.data.packed import CausalBlocks, DocumentCollate, MaskedBlocks, PackedBlocks, stack_blocks
from fmctl.errors import DataError
from fmctl.tasks.base import PreparedData, Task
from fmctl.tasks.declare import WEIGHT_FORMATS, Serving, TaskDeclaration
from fmctl.tasks.vocabulary_serving import VocabularyLogitsServing


@dataclass
class MLMTaskConfig:
    name: Literal["mlm"] = "mlm"
    # Fraction of tokens chosen for prediction; of those 80% become [MASK], 10% a random
    # token and 10% stay unchanged (BERT's recipe).
    mask_prob: float = bounded(0.15, gt=0.0, lt=1.0)
    # Mask all pieces of a word together (WordPiece '##' continuations).
    whole_word: bool = False


@dataclass
class CLMTaskConfig:
    name: Literal["clm"] = "clm"


def _prepare_blocks(run: RunConfig, block: int) -> tuple[dict[str, Any], Any, dict[str, PackedBlocks]]:
    from fmctl.data.prepare import load_prepared, load_prepared_tokenizer

    folder = Path(run.data.prepared).expanduser()
    meta, shards = load_prepared(folder, verify=run.data.verify_shards)
    tokenizer = load_prepared_tokenizer(folder, meta)
    tokenizer.model_max_length = run.data.max_length
    blocks = {split: PackedBlocks(shards[split], block) for split in ("train", "validation")}
    if len(blocks["train"]) == 0:
        raise DataError(f"data.prepared: '{folder}' holds {sum(len(s.tokens) for s in shards['train'])} training "
                        f"tokens, fewer than one block of data.max_length={run.data.max_length}")
    return meta, tokenizer, blocks


def _collate(run: RunConfig, meta: dict[str, Any]) -> Any:
    return DocumentCollate(int(meta["separator_id"])) if run.data.document_mask else stack_blocks


def _attention(model: Any, batch: dict[str, Any], causal: bool) -> dict[str, Any]:
    """The attention mask (and positions) for this batch: the whole row, or each document."""
    if "document_ids" in batch:
        from fmctl.models.document_mask import attention_inputs

        return attention_inputs(model, batch["document_ids"], causal)
    return {} if causal else {"attention_mask": batch["attention_mask"]}


class FusedLoss:
    """A training step's loss computed by the fused kernel (no logits to score)."""

    def __init__(self, value: Any):
        self.value = value


class LMMetrics:
    """Token-weighted loss, perplexity and prediction accuracy over an evaluation pass."""

    def __init__(self) -> None:
        self.loss_sum = 0.0
        self.tokens = 0
        self.correct = 0

    def update(self, outputs: Any, batch: dict[str, Any], loss: Any) -> None:
        logits, targets = outputs
        n = int(targets.numel())
        if loss is not None:
            self.loss_sum += float(loss) * n
        self.tokens += n
        self.correct += int((logits.argmax(-1) == targets).sum())

    def compute(self) -> dict[str, float]:
        if not self.tokens:
            return {}
        loss = self.loss_sum / self.tokens
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "accuracy": self.correct / self.tokens}

    # What `fmctl eval` writes: the headline numbers; pretraining has no per-row predictions.
    def report(self) -> dict[str, Any]:
        return {**self.compute(), "num_examples": self.tokens, "num_predicted_tokens": self.tokens}

    def records(self, rows: list[Any], example_fields: Any) -> list[dict[str, Any]]:
        return []

    def write_files(self, folder: Path, report: dict[str, Any]) -> None:
        return None

    def tables(self, report: dict[str, Any]) -> list[Any]:
        return []


class _LanguageModeling(VocabularyLogitsServing, Task):
    label_names: list[str] = []

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.head_fraction = 1.0

    def build_model(self, run: RunConfig, data: PreparedData) -> Any:
        self.backbone = backbones.family(run.backbone.name)
        return self.backbone.build(run.backbone, "pretraining", data.preprocessor)

    def has_targets(self, batch: dict[str, Any]) -> bool:
        """The text is its own target: every batch can be scored."""
        return True

    def loss(self, outputs: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        if isinstance(outputs, FusedLoss):
            return outputs.value
        logits, targets = outputs
        return F.cross_entropy(logits.float(), targets)

    def new_metrics(self) -> LMMetrics:
        return LMMetrics()

    def save_model(self, model: Any, data: PreparedData, folder: Path) -> None:
        self.backbone.save(model, folder, data.preprocessor)

    def load_model(self, folder: Path) -> Any:
        self.backbone = backbones.of_folder(folder)
        model, _ = self.backbone.load(folder, "causal_lm" if self.name == "clm" else "masked_lm")
        return model

    def example_fields(self, row: Any) -> dict[str, Any]:
        return {}

    def flops_per_token(self, model: Any, seq_len: int) -> float:
        """6 FLOPs per parameter per token (forward + backward) for the transformer body,
        the attention score/value products, and the vocabulary head on the positions
        that have one (all for CLM, the masked ones for MLM)."""
        config = model.config
        layers = getattr(config, "num_hidden_layers", None) or config.n_layer
        width = getattr(config, "hidden_size", None) or config.n_embd
        embeddings = model.get_input_embeddings().weight.numel()
        positions = sum(p.numel() for n, p in model.named_parameters() if "position" in n or n.endswith("wpe.weight"))
        head_params = model.get_output_embeddings().weight.numel()
        body = sum(p.numel() for p in model.parameters()) - embeddings - positions
        if model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
            body -= head_params
        return 6 * body + 12 * layers * width * seq_len + 6 * head_params * self.head_fraction


class MaskedLM(_LanguageModeling):
    def __init__(self, cfg: MLMTaskConfig):
        super().__init__(cfg)
        self.head_fraction = cfg.mask_prob

    def prepare(self, run: RunConfig, *, model_dir: Path | None = None,
                splits: tuple[str, ...] = ("train", "validation")) -> PreparedData:
        meta, tokenizer, blocks = _prepare_blocks(run, run.data.max_length - 2)
        if tokenizer.mask_token_id is None or tokenizer.cls_token_id is None:
            raise DataError("data.prepared: its tokenizer has no [MASK]/[CLS] tokens; MLM needs a WordPiece "
                            "(BERT) tokenizer: prepare with tokenizer.kind=wordpiece")
        datasets = {split: MaskedBlocks(blocks[split], tokenizer, self.cfg.mask_prob, self.cfg.whole_word,
                                        run.trainer.seed + (0 if split == "train" else 7919))
                    for split in ("train", "validation")}
        return PreparedData(train=datasets["train"], validation=datasets["validation"] or None, test=None,
                            collate=_collate(run, meta), label_names=[], preprocessors={"text": tokenizer},
                            sources={"prepared": {"path": str(Path(run.data.prepared).resolve()),
                                                  "fingerprint": meta["fingerprint"]}},
                            rows={"validation": []})

    def forward(self, model: Any, batch: dict[str, Any]) -> Any:
        return _mlm_head(model)(self._masked_hidden(model, batch)), batch["labels"][batch["labels"] != -100]

    def fused_forward(self, model: Any, batch: dict[str, Any]) -> Any:
        """The masked positions' loss by fused linear + cross-entropy (no logits built);
        BERT-style heads only (a transform, then the vocabulary decoder)."""
        predictions = getattr(_mlm_head(model), "predictions", None)
        if predictions is None:
            return None
        from fmctl.kernels.cross_entropy import fused_linear_cross_entropy

        decoder = predictions.decoder
        labels = batch["labels"][batch["labels"] != -100]
        return FusedLoss(fused_linear_cross_entropy(predictions.transform(self._masked_hidden(model, batch)),
                                                    decoder.weight, labels, bias=decoder.bias))

    @staticmethod
    def _masked_hidden(model: Any, batch: dict[str, Any]) -> Any:
        hidden = model.base_model(input_ids=batch["input_ids"],
                                  **_attention(model, batch, causal=False)).last_hidden_state
        return hidden[batch["labels"] != -100]

    def parity_measure(self) -> Any:
        """Scored on the masked tokens, as training scores them."""
        from fmctl.export.measures import TokenArgmax

        return TokenArgmax()

    def postprocessing(self, run: RunConfig, label_names: list[str], model_dir: Path) -> dict[str, Any]:
        return {"kind": "vocabulary_logits", "output": "logits"}


class CausalLM(_LanguageModeling):
    def __init__(self, cfg: CLMTaskConfig):
        super().__init__(cfg)

    def prepare(self, run: RunConfig, *, model_dir: Path | None = None,
                splits: tuple[str, ...] = ("train", "validation")) -> PreparedData:
        meta, tokenizer, blocks = _prepare_blocks(run, run.data.max_length)
        return PreparedData(train=CausalBlocks(blocks["train"]), validation=CausalBlocks(blocks["validation"]) or None,
                            test=None, collate=_collate(run, meta), label_names=[], preprocessors={"text": tokenizer},
                            sources={"prepared": {"path": str(Path(run.data.prepared).resolve()),
                                                  "fingerprint": meta["fingerprint"]}},
                            rows={"validation": []})

    def forward(self, model: Any, batch: dict[str, Any]) -> Any:
        ids = batch["input_ids"]
        logits = model(input_ids=ids, **_attention(model, batch, causal=True)).logits
        return logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)

    def fused_forward(self, model: Any, batch: dict[str, Any]) -> Any:
        """Next-token loss by fused linear + cross-entropy: the vocabulary logits are never built."""
        from fmctl.kernels.cross_entropy import fused_linear_cross_entropy

        ids = batch["input_ids"]
        hidden = model.base_model(input_ids=ids, **_attention(model, batch, causal=True)).last_hidden_state[:, :-1]
        head = model.get_output_embeddings()
        return FusedLoss(fused_linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), head.weight,
                                                    ids[:, 1:].reshape(-1), bias=head.bias))

    def postprocessing(self, run: RunConfig, label_names: list[str], model_dir: Path) -> dict[str, Any]:
        from fmctl.models.saved import saved_config

        config = saved_config(model_dir)
        positions = int(config.get("max_position_embeddings") or config.get("n_positions") or 4096)
        return {"kind": "generate", "output": "logits", "max_positions": positions,
                "how": "fmctl predict RUN_OR_EXPORT --prompt TEXT, or transformers' generate() on the hf folder"}


def _mlm_head(model: Any) -> Any:
    """The vocabulary head of a masked LM: BERT's `cls`, other families' `lm_head`."""
    return getattr(model, "cls", None) or getattr(model, "lm_head")


def _needs_prepared(run: RunConfig) -> list[str]:
    if run.data.prepared is None:
        return ["data.prepared: required for pretraining on text; make one with fmctl data prepare input=... "
                "out=DIR, then data.prepared=DIR"]
    return []


_LM_METRICS = dict(metrics=("loss", "perplexity", "accuracy"), main_metric="loss", main_mode="min",
                   verbs=("pretrain",), reads="prepared", checks=_needs_prepared)
TASKS = (
    TaskDeclaration(
        name="mlm", config=MLMTaskConfig, implementation=MaskedLM, backbones=("bert",), **_LM_METRICS,
        serving=Serving(elsewhere="a masked-LM run is a starting point: fine-tune it (fmctl finetune "
                                  "backbone.pretrained=RUN)", formats=WEIGHT_FORMATS, auto_class="AutoModelForMaskedLM")),
    TaskDeclaration(
        name="clm", config=CLMTaskConfig, implementation=CausalLM, backbones=("gpt",), **_LM_METRICS,
        serving=Serving(reads="prompt", formats=("onnx", "safetensors", "hf"), auto_class="AutoModelForCausalLM")),
)
