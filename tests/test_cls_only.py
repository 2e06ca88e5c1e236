"""The [CLS]-only last block (fmctl/models/cls_only.py) computes what the full block does:
same logits and same gradients on padded batches, same training run, same saved files."""
import copy
import json

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification

from fmctl.models.cls_only import full_last_layer, use_cls_only_last_layer
from tests.helpers import TINY_TEXT, finetune, write_reviews_csv


def bert(attention, cls=BertForSequenceClassification):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=300, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=128, num_labels=3, attn_implementation=attention)
    return cls(config)


def padded_batch():
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 300, (6, 20), generator=generator)
    mask = torch.ones(6, 20, dtype=torch.long)
    mask[1, 12:] = 0
    mask[4, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "labels": torch.tensor([0, 1, 2, 0, 1, 2])}


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_logits_and_gradients_match_the_full_block(attention):
    full, short = bert(attention).eval(), bert(attention).eval()
    assert use_cls_only_last_layer(short)
    batch = padded_batch()
    out_full, out_short = full(**batch), short(**batch)
    assert torch.allclose(out_full.logits, out_short.logits, atol=1e-5)
    out_full.loss.backward()
    out_short.loss.backward()
    for (name, a), b in zip(full.named_parameters(), short.parameters()):
        if a.grad is None:
            assert b.grad is None or not b.grad.any(), name
            continue
        assert torch.allclose(a.grad, b.grad, atol=1e-5), name
    # Under bf16 autocast too (the default on CPUs with native bf16).
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.allclose(full(**batch).logits.float(), short(**batch).logits.float(), atol=5e-2)


def test_only_sequence_heads_on_bert_get_it_and_it_can_be_removed():
    assert not use_cls_only_last_layer(bert("sdpa", BertForTokenClassification))  # every position is read
    model = bert("sdpa")
    names = [n for n, _ in model.named_parameters()]
    assert use_cls_only_last_layer(model)
    assert [n for n, _ in model.named_parameters()] == names  # saved files are unchanged
    twin = copy.deepcopy(model)  # EMA / teacher copies keep it, bound to their own encoder
    assert twin.bert.encoder.forward.__self__ is twin.bert.encoder
    full_last_layer(model)
    assert "forward" not in vars(model.bert.encoder)
    assert model(**padded_batch()).logits.shape == (6, 3)


def test_training_with_and_without_it_gives_the_same_run(tmp_path):
    data = write_reviews_csv(tmp_path / "reviews.csv", 160, seed=3)
    common = [f"data.train={data}", "data.text_column=Review Text", "data.label_column=sentiment",
              *TINY_TEXT, "backbone.dropout=0", "trainer.max_steps=12", "trainer.eval_every=12",
              "trainer.batch_size=16"]
    results = {flag: finetune("text_csv", [*common, f"backbone.cls_only_last_layer={flag}"], tmp_path / f"run_{flag}")
               for flag in ("true", "false")}
    on, off = results["true"].metrics, results["false"].metrics
    assert on["val/loss"] == pytest.approx(off["val/loss"], rel=1e-4)
    assert on["val/accuracy"] == off["val/accuracy"]
    saved = [json.loads((r.run_dir / "model" / "config.json").read_text()) for r in results.values()]
    assert saved[0] == saved[1]
