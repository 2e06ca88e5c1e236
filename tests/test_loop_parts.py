"""The loop's building blocks: schedules, parameter groups, layer groups, data order."""
import pytest
import torch

from fmctl.backbones import structure_of
from fmctl.config.schema import OptimConfig, SchedConfig, TextBackboneConfig, VisionBackboneConfig
from fmctl.loop.optim import parameter_groups
from fmctl.loop.sampler import EpochSampler
from fmctl.loop.schedule import lr_multiplier


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
    groups = structure_of(model, family).groups(model)
    names = [n for members in groups.values() for n in members]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert len(names) == len(set(names))
    assert [g for g in groups if g.startswith("blocks.")] == ["blocks.0", "blocks.1", "blocks.2"]
    assert groups["embeddings"] and groups["head"] and list(groups)[-1] == "head"
    assert all(not n.startswith(("classifier", "score", "head.")) for n in groups["blocks.0"])


@pytest.mark.parametrize("family", ["bert", "gpt", "vit"])
def test_no_weight_decay_on_biases_norms_and_position_tables(models, family):
    model = models[family]
    groups = parameter_groups(model, structure_of(model, family), OptimConfig().weight_decay)
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


class _Task:
    """What monitored() reads of a task: its main metric, that metric's direction, and
    the other metrics it minimises."""
    main_metric, main_mode, minimized = "accuracy", "max", ("rmse",)


@pytest.mark.parametrize("monitor, mode, expected", [
    (None, None, ("val/accuracy", "max")),            # the task's main metric, its declared way
    (None, "min", ("val/accuracy", "min")),           # an explicit mode wins
    ("val/loss", None, ("val/loss", "min")),          # any loss goes down
    ("val/rmse", None, ("val/rmse", "min")),          # the task says so
    ("val/macro_f1", None, ("val/macro_f1", "max")),  # everything else goes up
])
def test_monitored_metric_and_direction_come_from_one_place(monitor, mode, expected, monkeypatch):
    from types import SimpleNamespace

    import fmctl.tasks
    from fmctl.config.schema import TrainerConfig
    from fmctl.launch import objective_of
    from fmctl.loop.best import monitored

    trainer = TrainerConfig(monitor=monitor, monitor_mode=mode)
    assert monitored(_Task(), trainer) == expected
    # The sweep launcher reports the same metric and direction as the loop tracks.
    monkeypatch.setattr(fmctl.tasks, "create", lambda cfg: _Task())
    direction = "maximize" if expected[1] == "max" else "minimize"
    assert objective_of(SimpleNamespace(task=None, trainer=trainer)) == (expected[0], direction)


def test_best_tracker_keeps_the_best_in_progress_and_stops_after_patience():
    from fmctl.errors import ConfigError
    from fmctl.loop.best import BestTracker
    from fmctl.loop.state import Progress

    progress = Progress()
    best = BestTracker(progress, "val/loss", "min", patience=2)
    for step, loss, improved, stop in [(1, 0.9, True, False), (2, 0.7, True, False), (3, 0.8, False, False),
                                       (4, 0.7, False, True)]:  # equal is no improvement
        progress.step = step
        assert best.update({"val/loss": loss, "epoch": 0.1}) is improved and best.should_stop is stop
    assert (progress.best_step, progress.best_value, progress.stale_evals) == (2, 0.7, 2)
    assert best.info() == {"step": 2, "monitor": "val/loss", "value": 0.7}
    assert not BestTracker(progress, "val/loss", "min", patience=None).should_stop
    with pytest.raises(ConfigError, match=r"'val/f1' is not among the evaluation metrics \(val/loss\)"):
        BestTracker(progress, "val/f1", "max", None).update({"val/loss": 0.5, "epoch": 1.0})


def test_throughput_window_counts_and_resets():
    from fmctl.loop.throughput import Throughput

    window = Throughput(flops_per_token=10.0, peak_flops=1000.0)
    window.count(4, 0)
    assert window.token_rates(2.0) == {}  # images: no tokens, no MFU
    window.count(4, 100)
    assert window.samples_per_s(2.0) == 4.0
    assert window.token_rates(2.0) == {"tokens_per_s": 50.0, "mfu": 0.5}
    window.reset()
    assert (window.samples, window.tokens) == (0, 0) and window.elapsed() < 1.0
    assert Throughput().token_rates(1.0) == {} and Throughput.measured(None, "cpu", "fp32").peak_flops is None


def test_fit_calls_the_hooks_at_every_micro_batch_and_uses_their_loss(reviews, tmp_path):
    """hooks.on_batch(step, micro) before each micro-batch, hooks.on_loss(loss, attempt)
    before backward: a NaN returned for attempt 2 skips that step, which is tried again."""
    from rich.console import Console

    from fmctl.loop.fit import fit, seed_everything
    from fmctl.loop.hooks import LoopHooks
    from fmctl.tasks import get_task
    from tests.helpers import TINY_TEXT, compose

    class Recorder(LoopHooks):
        def __init__(self):
            self.batches, self.attempts = [], []

        def on_batch(self, step, micro):
            self.batches.append((step, micro))

        def on_loss(self, loss, attempt):
            self.attempts.append(attempt)
            return loss * float("nan") if attempt == 2 else loss

    _, run = compose("text_csv", [f"data.train={reviews['train']}", "data.text_column=Review Text",
                                  "data.label_column=sentiment", "data.max_train_examples=64", *TINY_TEXT,
                                  "trainer.batch_size=8", "trainer.grad_accum=2", "trainer.max_steps=3",
                                  "trainer.eval_every=100"], tmp_path / "run")
    seed_everything(run.trainer.seed)
    task = get_task(run.task)
    data = task.prepare(run)
    hooks = Recorder()
    result = fit(task.build_model(run, data), task, data, run, None, Console(quiet=True), hooks=hooks)
    assert result.steps == 3 and result.nonfinite_skipped == 1
    assert hooks.batches == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert hooks.attempts == [1, 1, 2, 2, 3, 3, 4, 4]


def test_an_mfu_above_one_remeasures_the_peak_and_is_never_reported():
    """A peak measured while the machine was busy made a resumed pretraining log 'MFU
    155.1%': the peak is measured again, and if the rate still beats it, no MFU at all."""
    from fmctl.loop.throughput import Throughput

    fresh = iter([3000.0, 900.0])
    window = Throughput(flops_per_token=10.0, peak_flops=1000.0, remeasure=lambda: next(fresh))
    window.count(8, 300)                      # 150 tokens/s x 10 FLOP = 1500 FLOP/s > the first peak
    assert window.token_rates(2.0) == {"tokens_per_s": 150.0, "mfu": 0.5}   # against the re-measured 3000
    busy = Throughput(flops_per_token=10.0, peak_flops=1000.0, remeasure=lambda: 1100.0)
    busy.count(8, 300)
    assert busy.token_rates(2.0) == {"tokens_per_s": 150.0} and "MFU not reported" in busy.note
    busy.count(8, 30)
    assert "mfu" not in busy.token_rates(2.0)  # not for the rest of the run


def test_the_eta_after_a_resume_counts_only_the_steps_since_the_resume(monkeypatch):
    """Resumed at step 641 of 1500 at 3 s per step, the ETA is about 849 x 3 s, not the
    time since the resume divided over all 651 steps."""
    import io

    from rich.console import Console

    from fmctl.loop import tracking

    ticks = [100.0, 130.0]
    monkeypatch.setattr(tracking.time, "perf_counter", lambda: ticks.pop(0) if len(ticks) > 1 else ticks[0])
    out = io.StringIO()
    display = tracking.Display("log", 1500, Console(file=out, width=200), start_step=641)
    display.step(651, {"loss": 1.0})
    assert "step 651/1500" in out.getvalue() and "eta 2547s" in out.getvalue()
    bar = tracking.Display("bar", 1500, Console(file=io.StringIO(), force_terminal=True), start_step=641)
    assert bar.progress.tasks[0].completed == 641  # rich's rate starts from the resume, not from 0
    bar.close()
