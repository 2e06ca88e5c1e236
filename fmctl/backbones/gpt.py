"""GPT-2 and the decoder-only models that load like it (GPT-Neo(X), GPT-J, Llama,
Mistral, Qwen, OPT, Phi, Bloom, Gemma, Falcon), from transformers: causal-LM pretraining,
classification, token classification and decoder-only translation."""
from __future__ import annotations

from typing import Any

from fmctl.backbones import _text
from fmctl.backbones._locate import existing, uniform_stack
from fmctl.backbones.structure import FfnLayout, HeadLayout, Structure, declared
from fmctl.config.schema import TextBackboneConfig

# Where the block stack sits under the base model: GPT-2/Neo/J/Bloom/Falcon (`h`),
# Llama-likes and GPT-NeoX (`layers`), OPT (`decoder.layers`), others (`blocks`).
_STACKS = ("h", "layers", "decoder.layers", "blocks")


class Gpt(_text.TextFamily):
    name = "gpt"
    config = TextBackboneConfig
    pretrains = "causal"
    poolings = ("mean", "last")        # fmctl probe: mean over real tokens, or the last real one
    kind = "a decoder"
    model_types = frozenset({"gpt2", "gpt_neo", "gpt_neox", "gptj", "llama", "mistral", "qwen2", "qwen3", "opt", "phi",
                             "phi3", "bloom", "gemma", "gemma2", "falcon"})
    tokenizer_kind = "bpe"
    # Sequence classification's score, token classification's classifier.
    head_markers = ("score.", "classifier")
    head_attrs = ("classifier", "score", "qa_outputs")
    lora_targets = ("c_attn", "attn.c_proj")
    fan_in_fan_out = True  # GPT-2's Conv1D stores weights as (in, out)
    attention_dropout = ("attn.attn_dropout",)
    dropout_keys = {"hidden": ("resid_pdrop", "embd_pdrop", "dropout"),   # OPT: dropout
                    "attention": ("attn_pdrop", "attention_dropout")}
    # GPT-2: one Conv1D projects q, k and v side by side (weight (in, 3 * hidden)).
    head_layout = HeadLayout(count="attn.num_heads", projections=(("attn.c_attn", 1, (0, 1, 2)),
                                                                  ("attn.c_proj", 0, (0,))))
    # GPT2Config.n_inner: the MLP width (null means 4 x n_embd).
    ffn_layout = FfnLayout(expand="mlp.c_fc", reduce="mlp.c_proj", width_key="n_inner")
    sequence_pooling = "last"   # as a CLIP text tower
    depth_keys = ("num_hidden_layers", "n_layer", "num_layers")
    # An encoder_decoder's decoder: GPT-2 takes cross-attention (add_cross_attention); the other
    # decoder-only types this family loads do not.
    cross_attention_types = frozenset({"gpt2"})

    def structure(self, model: Any) -> Structure:
        """One stack of decoder blocks. A decoder laid out otherwise falls back to its
        largest stack of identical modules."""
        root, base, at = _text.locate(model)
        found = existing(base, _STACKS)[:1] or [s for s in (uniform_stack(base),) if s]
        return declared(self, model, _text.stacks_at(root, at, found), root)

    def fresh_config(self, cfg: Any, tokenizer: Any) -> Any:
        """A GPT2Config at the size table's shape (fmctl.models.sizes), random weights."""
        from transformers import GPT2Config

        from fmctl.models.sizes import shape_for

        shape = shape_for(cfg.size, cfg.hidden_size, cfg.num_layers, cfg.num_heads)
        return GPT2Config(vocab_size=len(tokenizer), n_embd=shape.hidden_size, n_layer=shape.num_layers,
                          n_head=shape.num_heads, n_inner=shape.intermediate_size, n_positions=cfg.max_positions,
                          resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
                          pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id)


FAMILY = Gpt()
