"""The loop's building blocks: schedules, parameter groups, layer groups, data order."""
import pytest
import torch

from fmctl.config.schema import OptimConfig, SchedConfig, TextBackboneConfig, VisionBackboneConfig
from fmctl.loop.optim import parameter_groups
from fmctl.loop.sampler import EpochSampler
from fmctl.loop.schedule import lr_multiplier
from fmctl.models.groups import layer_groups


def test_linear_schedule_warms_up_then_decays_to_floor():
    f = lr_multiplier(SchedConfig(name="linear", warmup_steps=10, min_lr_ratio=0.1), total_steps=110)
    assert f(0) == pytest.approx(1 / 11) and f(9) == pytest.approx(10 / 11) and f(10) == 1.0
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5) and f(110) == pytest.approx(0.1)
    values = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_cosine_and_constant_schedules():
    cos = lr_multiplier(SchedConfig(name="cosine", warmup_ratio=0.0), total_steps=100)
    assert cos(0) == 1.0 and cos(50) == pytest.approx(0.5) and cos(100) == pytest.approx(0.0, abs=1e-12)
    const = lr_multiplier(SchedConfig(name="constant", warmup_steps=0), total_steps=100)
    assert {const(s) for s in range(100)} == {1.0}


def tiny_models():
    from transformers import PreTrainedTokenizerFast

    from fmctl.data.tokenizer_training import train_tokenizer
    from fmctl.models.text import build_sequence_classifier
    from fmctl.models.vision import build_vit_classifier

    texts = ["a short text about nothing", "another text with other words"] * 20
    models = {}
    for name, kind in (("bert", "wordpiece"), ("gpt", "bpe")):
        tok = train_tokenizer(texts, kind, 200, 64)
        assert isinstance(tok, PreTrainedTokenizerFast)
        models[name] = build_sequence_classifier(TextBackboneConfig(name=name, hidden_size=32, num_layers=3,
                                                                    num_heads=2), tok, ["a", "b"])
    models["vit"] = build_vit_classifier(VisionBackboneConfig(hidden_size=32, num_layers=3, num_heads=2,
                                                              image_size=16), 3)
    return models


@pytest.fixture(scope="module")
def models():
    return tiny_models()


@pytest.mark.parametrize("family", ["bert", "gpt", "vit"])
def test_layer_groups_cover_every_parameter_once(models, family):
    model = models[family]
    groups = layer_groups(model)
    names = [n for members in groups.values() for n in members]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert len(names) == len(set(names))
    assert [g for g in groups if g.startswith("blocks.")] == ["blocks.0", "blocks.1", "blocks.2"]
    assert groups["embeddings"] and groups["head"] and list(groups)[-1] == "head"
    assert all(not n.startswith(("classifier", "score", "head.")) for n in groups["blocks.0"])


@pytest.mark.parametrize("family", ["bert", "gpt", "vit"])
def test_no_weight_decay_on_biases_norms_and_position_tables(models, family):
    model = models[family]
    groups = parameter_groups(model, OptimConfig().weight_decay)
    decay = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, param in model.named_parameters():
        if name.endswith("bias") or "norm" in name.lower() or name in ("pos_embed", "cls_token"):
            assert id(param) not in decay, name
        elif param.ndim == 2 and "embed" not in name:
            assert id(param) in decay, name


def test_sampler_is_a_permutation_per_epoch_and_reproducible():
    sampler = EpochSampler(103, seed=5)
    first = list(sampler)
    assert sorted(first) == list(range(103))
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(second) == list(range(103)) and second != first
    again = EpochSampler(103, seed=5)
    again.set_epoch(1)
    assert list(again) == second
    shards = [list(EpochSampler(103, seed=5, rank=r, world_size=2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 51  # equal shares; the odd one out waits for the next epoch
    assert sorted(shards[0] + shards[1]) == sorted(first[:102])
    assert shards[0] == first[:102][0::2]
    resumed = EpochSampler(103, seed=5, rank=1, world_size=2)
    resumed.set_epoch(0, start=10)
    assert list(resumed) == shards[1][10:] and len(resumed) == 41


def test_grad_scaler_only_for_fp16():
    from fmctl.loop.precision import Precision

    assert Precision("fp16", "cpu").scaler() is not None
    assert Precision("bf16", "cpu").scaler() is None and Precision("fp32", "cpu").scaler() is None
    with Precision("bf16", "cpu").autocast():
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == torch.bfloat16


def test_length_grouped_order_is_a_reproducible_permutation_with_less_padding():
    import random

    rng = random.Random(0)
    lengths = [rng.randint(5, 128) for _ in range(1000)]
    sampler = EpochSampler(1000, seed=3, lengths=lengths, batch_size=32)
    first = list(sampler)
    assert sorted(first) == list(range(1000))
    again = EpochSampler(1000, seed=3, lengths=lengths, batch_size=32)
    assert list(again) == first
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == list(range(1000))

    def padded(order):
        batches = [order[i:i + 32] for i in range(0, len(order), 32)]
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    plain = list(EpochSampler(1000, seed=3))
    assert padded(first) < 0.7 * padded(plain)  # real tokens are ~65/128 of a random batch's padded size
    ranks = [list(EpochSampler(1000, seed=3, lengths=lengths, batch_size=16, rank=r, world_size=2)) for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == list(range(1000))
    assert ranks[0] + ranks[1] != first  # ...and two ranks of 16 share the global batches of 32:
    assert {frozenset(ranks[0][k:k + 16] + ranks[1][k:k + 16]) for k in range(0, 496, 16)} == \
        {frozenset(first[k:k + 32]) for k in range(0, 992, 32)}
