"""Fine-tuning end to end on learnable generated data: loss falls, accuracy beats chance,
and the run folder holds everything the other verbs need."""
import json

import pytest
from safetensors.torch import load_file

from tests.helpers import TINY_TEXT, TINY_VIT, finetune, read_jsonl, write_pairs_jsonl

TEXT_STEPS = ["trainer.max_steps=100", "trainer.batch_size=16", "optim.lr=2e-3", "trainer.eval_every=50",
              "trainer.log_every=5"]


def text_overrides(reviews, backbone="bert"):
    return [f"backbone={backbone}", f"data.train={reviews['train']}", f"data.test={reviews['test']}",
            "data.text_column=Review Text", "data.label_column=sentiment", *TINY_TEXT, *TEXT_STEPS]


@pytest.fixture(scope="module")
def bert_run(reviews, tmp_path_factory):
    return finetune("text_csv", text_overrides(reviews), tmp_path_factory.mktemp("bert") / "run")


def losses(run_dir):
    return [r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["event"] == "train"]


def assert_learned(result, chance):
    curve = losses(result.run_dir)
    assert sum(curve[-3:]) / 3 < 0.7 * sum(curve[:2]) / 2, f"loss did not fall: {curve}"
    assert result.metrics["val/accuracy"] > chance + 0.3, result.metrics


def test_bert_learns_and_writes_a_complete_run_folder(bert_run):
    assert_learned(bert_run, chance=0.5)
    assert bert_run.metrics["test/accuracy"] > 0.8
    run_dir = bert_run.run_dir
    for name in ("config.yaml", "manifest.json", "metrics.jsonl", "model/config.json", "model/model.safetensors",
                 "model/tokenizer.json", "checkpoints/best/model.safetensors"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    states = list((run_dir / "checkpoints").glob("step_*/state.pt"))
    assert len(states) == 1  # keep_last=1
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["label_names"] == ["negative", "positive"]
    assert manifest["parameters"]["total"] > 0 and manifest["data"]["train"]["bytes"] > 0
    config = (run_dir / "config.yaml").read_text()
    assert "run_dir: null" in config and "max_steps: 100" in config


def test_gpt_learns(reviews, tmp_path):
    result = finetune("text_csv", text_overrides(reviews, "gpt"), tmp_path / "run")
    assert_learned(result, chance=0.5)


def test_vit_learns_on_an_image_folder(shapes, tmp_path):
    result = finetune("image_folder", [f"data.train={shapes}", *TINY_VIT, "trainer.max_steps=60",
                                       "trainer.batch_size=16", "optim.lr=2e-3", "trainer.eval_every=30",
                                       "trainer.log_every=5", "backbone.drop_path=0"], tmp_path / "run")
    assert_learned(result, chance=0.5)


def test_text_pairs_reach_the_model(tmp_path):
    """The first text is neutral filler and the label follows the second text alone, so
    accuracy well above chance proves the pair column reaches the model."""
    import random

    from tests.helpers import NEUTRAL, review

    rng = random.Random(4)
    path = tmp_path / "pairs.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(480):
            label = rng.choice(["positive", "negative"])
            premise = " ".join(rng.choice(NEUTRAL) for _ in range(rng.randint(3, 10)))
            handle.write(json.dumps({"premise": premise, "hypothesis": review(rng, label), "label": label}) + "\n")
    result = finetune("text_csv", [f"data.train={path}", "data.text_column=premise",
                                   "data.text_pair_column=hypothesis", *TINY_TEXT, *TEXT_STEPS,
                                   "trainer.max_steps=150", "optim.lr=1e-3"], tmp_path / "run")
    assert result.metrics["val/accuracy"] > 0.8, result.metrics


def final_weights(run_dir):
    return load_file(str(run_dir / "model" / "model.safetensors"))


def test_gradient_accumulation_matches_the_larger_batch(reviews, tmp_path):
    """4 micro-batches of 8 must update the model as one batch of 32 does.

    Adam divides each gradient by its own magnitude, so parameters whose true gradient is
    zero (attention key biases) turn float noise into full-size steps of random sign. A
    large eps makes the update proportional to the gradient and isolates accumulation."""
    common = text_overrides(reviews) + ["trainer.max_steps=4", "backbone.dropout=0", "trainer.eval_every=100",
                                        "data.group_by_length=false",  # batches of 8 and 32 group differently
                                        "trainer.grad_clip=0", "trainer.log_every=1", "optim.eps=1.0",
                                        "optim.lr=0.1", "optim.weight_decay=0"]
    small = finetune("text_csv", common + ["trainer.batch_size=8", "trainer.grad_accum=4"], tmp_path / "a")
    large = finetune("text_csv", common + ["trainer.batch_size=32", "trainer.grad_accum=1"], tmp_path / "b")
    a, b = final_weights(small.run_dir), final_weights(large.run_dir)
    gap = max((a[k] - b[k]).abs().max().item() for k in a)
    assert gap < 1e-4, f"weights differ by {gap}"
    assert losses(small.run_dir) == pytest.approx(losses(large.run_dir), rel=1e-4)
    unaccumulated = finetune("text_csv", common + ["trainer.batch_size=8", "trainer.grad_accum=1"], tmp_path / "c")
    c = final_weights(unaccumulated.run_dir)
    assert max((c[k] - b[k]).abs().max().item() for k in c) > 10 * gap  # the comparison can tell them apart


def test_same_seed_gives_identical_metrics(reviews, tmp_path):
    from fmctl.loop.tracking import TIMING_KEYS

    overrides = text_overrides(reviews) + ["trainer.max_steps=12", "trainer.eval_every=6"]
    runs = [finetune("text_csv", overrides, tmp_path / name) for name in ("a", "b")]
    records = [[{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_jsonl(run.run_dir / "metrics.jsonl")]
               for run in runs]
    assert records[0] == records[1]
    a, b = final_weights(runs[0].run_dir), final_weights(runs[1].run_dir)
    assert all(a[k].equal(b[k]) for k in a)
    different = finetune("text_csv", overrides + ["trainer.seed=7"], tmp_path / "c")
    assert losses(different.run_dir) != losses(runs[0].run_dir)


def test_pair_file_helper_is_learnable_format(tmp_path):
    rows = read_jsonl(write_pairs_jsonl(tmp_path / "p.jsonl", 10, seed=0))
    assert {"premise", "hypothesis", "label"} <= set(rows[0])


def test_early_stopping_checkpoints_and_subsets(reviews, tmp_path):
    """A learning rate too small to change accuracy: the metric never improves after the
    first evaluation, so patience 2 stops the run at the third evaluation."""
    result = finetune("text_csv", text_overrides(reviews) + [
        "optim.lr=1e-9", "sched=constant", "trainer.eval_every=2", "trainer.early_stopping_patience=2",
        "trainer.checkpoint_every=2", "trainer.keep_last=2", "data.max_train_examples=200",
        "data.max_eval_examples=30"], tmp_path / "run")
    assert result.fit.stopped_early and result.fit.steps == 6 and result.fit.best_step == 2
    steps = sorted(p.name for p in (result.run_dir / "checkpoints").glob("step_*"))
    assert steps == ["step_00000004", "step_00000006"]
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["examples"] == {"train": 200, "validation": 30, "test": 30}
    assert manifest["model_step"] == 2


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_on_cpu(reviews, bert_run, tmp_path, precision):
    overrides = [o for o in text_overrides(reviews) if not o.startswith("trainer.precision")]
    result = finetune("text_csv", overrides + [f"trainer.precision={precision}"], tmp_path / "run")
    assert result.fit.precision == precision
    assert_learned(result, chance=0.5)
    # the same run in fp32 (bert_run): the loss curves stay together, step for step
    fp32, mixed = losses(bert_run.run_dir), losses(result.run_dir)
    gaps = [abs(a - b) for a, b in zip(fp32, mixed)]
    assert len(mixed) == len(fp32) and max(gaps) < 0.1 and sum(gaps) / len(gaps) < 0.02, (fp32, mixed)
    assert abs(result.metrics["val/accuracy"] - bert_run.metrics["val/accuracy"]) <= 0.1


@pytest.mark.parametrize("family", ["bert", "vit"])
def test_gradient_checkpointing_recomputes_blocks_and_changes_no_number(family, reviews, shapes, tmp_path):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from fmctl.backbones import structure_of
    from fmctl.loop.fit import enable_gradient_checkpointing

    if family == "bert":
        model = BertForSequenceClassification(BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2,
                                                         num_attention_heads=2, intermediate_size=64))
        inputs = {"input_ids": torch.randint(0, 60, (4, 10))}
        overrides, recipe = text_overrides(reviews), "text_csv"
    else:
        import timm

        model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=4, num_classes=3)
        inputs = {"x": torch.randn(4, 3, 16, 16)}
        overrides = [f"data.train={shapes}", *TINY_VIT, "trainer.max_steps=8", "trainer.eval_every=8"]
        recipe = "image_folder"
    calls = []  # a linear layer inside the first block: transformers checkpoints forward, not the hooks around it
    (stack,) = structure_of(model, family).stacks
    first_linear = next(m for m in model.get_submodule(stack)[0].modules() if isinstance(m, torch.nn.Linear))
    first_linear.register_forward_hook(lambda *_: calls.append(1))
    model.train()
    enable_gradient_checkpointing(model)
    out = model(**inputs)
    (out.logits if hasattr(out, "logits") else out).float().sum().backward()
    assert len(calls) == 2  # forward, then again in backward
    # the same run with and without it: same numbers (dropout off, so nothing random moves)
    runs = [finetune(recipe, [*overrides, "backbone.dropout=0", f"trainer.gradient_checkpointing={flag}",
                              *(["backbone.drop_path=0"] if family == "vit" else [])], tmp_path / flag)
            for flag in ("false", "true")]
    assert runs[1].metrics["val/loss"] == pytest.approx(runs[0].metrics["val/loss"], rel=1e-5)


def test_own_files_turn_the_builtin_data_off_for_every_split(tmp_path):
    """The default recipe's built-in topics data must not supply a split the user left out:
    given train and validation files, there is no test split (its labels would be topics')."""
    from fmctl.data.sources import split_paths
    from tests.helpers import compose, write_reviews_csv

    train = write_reviews_csv(tmp_path / "train.csv", 160, seed=1)
    validation = write_reviews_csv(tmp_path / "validation.csv", 40, seed=2)
    own = ["data.text_column=Review Text", "data.label_column=sentiment", *TINY_TEXT, "trainer.max_steps=3"]
    _, run = compose("bert_topics", [f"data.train={train}", f"data.validation={validation}", *own])
    assert split_paths(run.data) == {"train": train, "validation": validation, "test": None}
    result = finetune("bert_topics", [f"data.train={train}", f"data.validation={validation}", *own], tmp_path / "run")
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["label_names"] == ["negative", "positive"] and "test" not in manifest["examples"]


def test_a_task_the_builtin_data_does_not_fit_takes_the_users_files_or_says_which_recipe(tmp_path):
    from fmctl.errors import ConfigError
    from tests.helpers import compose
    from tests.task_data import write_conll

    conll = write_conll(tmp_path / "train.conll", 60, seed=1)
    _, run = compose("bert_topics", ["task=token_classification", f"data.train={conll}"])
    assert run.task.name == "token_classification" and run.data.train == str(conll)
    with pytest.raises(ConfigError, match=r"data.builtin: 'topics' does not fit task 'token_classification'; give "
                                          r"your files with data.train=PATH \(or start from recipe=ner_conll\)"):
        compose("bert_topics", ["task=token_classification"])
