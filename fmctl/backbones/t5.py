"""T5 and the encoder-decoders that load like it (mT5, UMT5, LongT5, BART, mBART, Marian,
Pegasus), from transformers: translation / seq2seq. Two block stacks, the encoder's and
the decoder's, in that depth order."""
from __future__ import annotations

from typing import Any

from fmctl.backbones import _text
from fmctl.backbones._locate import existing, uniform_stack
from fmctl.backbones.structure import FfnLayout, HeadRemoval, Structure, declared
from fmctl.config.schema import TextBackboneConfig

# Encoder then decoder blocks: T5-likes (`block`), BART-likes (`layers`).
_STACKS = ("encoder.block", "decoder.block", "encoder.layers", "decoder.layers")


class T5(_text.TextFamily):
    name = "t5"
    config = TextBackboneConfig
    kind = "an encoder-decoder"
    model_types = frozenset({"t5", "mt5", "umt5", "longt5", "bart", "mbart", "marian", "pegasus"})
    tokenizer_kind = "t5"
    # A classifier or QA head where an encoder-decoder has one (T5/BART *ForQuestionAnswering,
    # *ForTokenClassification); translation's LM head is not a task head here.
    head_attrs = ("classifier", "qa_outputs")
    # LoRA's default targets: the attention's query and value projections, as peft's own
    # defaults for these model types (T5-likes name them q / v, BART-likes q_proj / v_proj).
    lora_targets = ("q", "v", "q_proj", "v_proj")
    # BART-likes' config keys (T5's own dropout_rate is not rewritten).
    dropout_keys = {"hidden": ("dropout",), "attention": ("attention_dropout",)}
    # T5's config records heads (num_heads) and head width (d_kv) apart, so prune removes
    # heads. Self-attention keeps the same heads throughout a stack: the relative position
    # bias the first block computes (one column per head) is reused by every later block.
    # BART-likes derive the width from d_model / heads; they have no T5Attention and the
    # removal refuses them when it finds no `n_heads`.
    head_removal = HeadRemoval(count_key="num_heads",
                               sites=(("layer.0.SelfAttention", True), ("layer.1.EncDecAttention", False)),
                               inputs=("q", "k", "v"), output="o", count_attr="n_heads", inner_attr="inner_dim",
                               tables=("relative_attention_bias",))
    # The feed-forward layers are the last layer of every block (1 in the encoder's, 2 in the
    # decoder's, after cross-attention); T5 v1.1's gated wi_0 / wi_1 are not supported.
    ffn_layout = FfnLayout(expand="layer.-1.DenseReluDense.wi", reduce="layer.-1.DenseReluDense.wo", width_key="d_ff")

    def structure(self, model: Any) -> Structure:
        """The encoder's blocks then the decoder's. An encoder-decoder laid out otherwise
        falls back to its largest stack of identical modules."""
        root, base, at = _text.locate(model)
        found = existing(base, _STACKS) or [s for s in (uniform_stack(base),) if s]
        return declared(self, model, _text.stacks_at(root, at, found), root)

    def position_table(self, model: Any) -> int | None:
        """Relative attention buckets: no table limits the length."""
        return None

    def fresh_config(self, cfg: Any, tokenizer: Any) -> Any:
        """A T5Config at the size table's shape, encoder and decoder each that deep. T5
        starts decoding from the pad token and has no absolute positions (relative
        attention buckets), so max_positions does not apply."""
        from transformers import T5Config

        from fmctl.models.sizes import shape_for

        shape = shape_for(cfg.size, cfg.hidden_size, cfg.num_layers, cfg.num_heads)
        return T5Config(vocab_size=len(tokenizer), d_model=shape.hidden_size, d_kv=shape.hidden_size // shape.num_heads,
                        d_ff=shape.intermediate_size, num_layers=shape.num_layers,
                        num_decoder_layers=shape.num_layers, num_heads=shape.num_heads, dropout_rate=cfg.dropout,
                        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                        decoder_start_token_id=tokenizer.pad_token_id)


FAMILY = T5()
