"""BERT and the encoders that share its layout (RoBERTa, DistilBERT, ELECTRA, DeBERTa,
ModernBERT, ...), from transformers: masked-LM pretraining, classification, token
classification and extractive QA heads."""
from __future__ import annotations

from typing import Any

from fmctl.backbones import _text
from fmctl.backbones._locate import existing, uniform_stack
from fmctl.backbones.base import BackboneFamily
from fmctl.backbones.structure import FfnLayout, HeadLayout, Structure, declared
from fmctl.config.schema import TextBackboneConfig

# Where the block stack sits under the base model: BERT/RoBERTa/ELECTRA/DeBERTa,
# DistilBERT, ModernBERT, and encoders that keep an `encoder.layers` list.
_STACKS = ("encoder.layer", "transformer.layer", "layers", "encoder.layers")
# Encoders whose learned positions start after the padding index (RoBERTa's embeddings).
OFFSET_POSITIONS = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer",
                              "roberta-prelayernorm", "ibert", "markuplm", "mpnet"})
# Model types whose blocks are transformers' BertLayer, which fmctl.models.cls_only
# re-implements for the [CLS] position alone.
CLS_ONLY_TYPES = frozenset({"bert"})


class Bert(_text.TextFamily):
    name = "bert"
    config = TextBackboneConfig
    pretrains = "masked"
    poolings = ("mean", "cls")         # fmctl probe: mean over real tokens, or [CLS]
    kind = "an encoder"
    model_types = frozenset({"bert", "roberta", "xlm-roberta", "distilbert", "electra", "albert", "camembert",
                             "mpnet", "deberta", "deberta-v2", "modernbert"})
    tokenizer_kind = "wordpiece"
    # The pooler and classifier (BERT, RoBERTa's classifier module, DeBERTa's pooler) and
    # ModernBERT's prediction head.
    head_markers = ("pooler.", "classifier", "head.")
    head_attrs = ("classifier", "qa_outputs")
    lora_targets = ("query", "key", "value")
    attention_dropout = ("attention.self.dropout",)
    dropout_keys = {"hidden": ("hidden_dropout_prob", "dropout"),          # DistilBERT: dropout
                    "attention": ("attention_probs_dropout_prob", "attention_dropout")}
    head_layout = HeadLayout(count="attention.self.num_attention_heads",
                             projections=(("attention.self.query", 0, (0,)), ("attention.self.key", 0, (0,)),
                                          ("attention.self.value", 0, (0,)), ("attention.output.dense", 1, (0,))))
    ffn_layout = FfnLayout(expand="intermediate.dense", reduce="output.dense", width_key="intermediate_size")
    sequence_pooling = "mean"   # as a CLIP text tower
    depth_keys = ("num_hidden_layers",)
    # An encoder_decoder's encoder, and its decoder where transformers' causal LM of the type
    # takes cross-attention (BertLMHeadModel, RobertaForCausalLM, ...).
    seq2seq_encoder = True
    cross_attention_types = frozenset({"bert", "roberta", "xlm-roberta", "electra", "camembert"})

    def structure(self, model: Any) -> Structure:
        """One stack of encoder blocks. An encoder this family does not list (ALBERT's
        layer groups, say) falls back to its largest stack of identical modules."""
        root, base, at = _text.locate(model)
        found = existing(base, _STACKS)[:1] or [s for s in (uniform_stack(base),) if s]
        return declared(self, model, _text.stacks_at(root, at, found), root)

    def position_table(self, model: Any) -> int | None:
        """max_position_embeddings, less RoBERTa's padding offset where it applies."""
        table = BackboneFamily.position_table(self, model)
        config = getattr(model, "config", None)
        if table is not None and getattr(config, "model_type", "") in OFFSET_POSITIONS:
            table -= (getattr(config, "pad_token_id", None) or 0) + 1
        return table

    def fresh_config(self, cfg: Any, tokenizer: Any) -> Any:
        """A BertConfig at the size table's shape (fmctl.models.sizes), random weights."""
        from transformers import BertConfig

        from fmctl.models.sizes import shape_for

        shape = shape_for(cfg.size, cfg.hidden_size, cfg.num_layers, cfg.num_heads)
        return BertConfig(vocab_size=len(tokenizer), hidden_size=shape.hidden_size, num_hidden_layers=shape.num_layers,
                          num_attention_heads=shape.num_heads, intermediate_size=shape.intermediate_size,
                          max_position_embeddings=cfg.max_positions, hidden_dropout_prob=cfg.dropout,
                          attention_probs_dropout_prob=cfg.dropout, pad_token_id=tokenizer.pad_token_id)


FAMILY = Bert()
