"""Composition and validation: recipes, overrides, and every problem at once."""
import pytest

from fmctl import backbones
from fmctl.config.compose import available_recipes, parse_invocation, preflight
from fmctl.errors import ConfigError
from tests.helpers import compose

# Template recipes need the user's data path.
NEEDS_DATA = {"text_csv": ["data.train=train.csv"], "image_folder": ["data.train=images/"],
              "bert_mlm": ["data.prepared=corpus/"], "gpt_clm": ["data.prepared=corpus/"],
              "vit_mim": ["data.train=images/"],
              "ner_conll": ["data.train=train.conll"], "qa_squad": ["data.train=train.json"],
              "regression_csv": ["data.train=train.csv"], "multilabel_csv": ["data.train=train.csv"],
              "translation_gpt": ["data.train=train.tsv"], "translation_t5": ["data.train=train.tsv"],
              "translation_minilm": ["data.train=train.tsv"], "translation_minilm_cased": ["data.train=train.tsv"],
              "segment_folder": ["data.train=scenes/"]}


@pytest.mark.parametrize("recipe", available_recipes())
def test_every_recipe_composes_and_validates(recipe):
    _, run = compose(recipe, NEEDS_DATA.get(recipe, []))
    assert run.recipe == recipe
    assert run.backbone.name in backbones.names()
    assert run.task.name in {"bert_mlm": "mlm", "gpt_clm": "clm", "vit_mim": "mim"}.get(recipe, run.task.name)


def test_overrides_reach_typed_config():
    _, run = compose("bert_topics", ["trainer.max_steps=7", "optim.lr=3e-4", "backbone=gpt", "sched=cosine"])
    assert run.trainer.max_steps == 7 and run.optim.lr == pytest.approx(3e-4)
    assert run.backbone.name == "gpt" and run.sched.name == "cosine"


def test_schema_key_missing_from_yaml_can_be_overridden(tmp_path):
    """A user's recipe that spells out only part of a group still takes every schema key."""
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("defaults:\n  - data: topics\n  - backbone: bert\n  - task: text_classification\n  - _self_\n"
                      "trainer:\n  max_steps: 3\n", encoding="utf-8")
    checked = preflight(parse_invocation([f"recipe={recipe}", "trainer.num_threads=1"]))
    assert "++trainer.num_threads=1" in checked.overrides
    assert checked.run.trainer.num_threads == 1 and checked.run.trainer.max_steps == 3


def test_every_default_is_written_once_in_the_schemas():
    """The options that only name a schema come from it, so the composed config carries
    every key at the schema's value and conf/ repeats none of them."""
    import dataclasses

    from fmctl import paths
    from fmctl.config.schema import DataConfig, OptimConfig, TrainerConfig

    checked = preflight(parse_invocation(["recipe=text_csv", "data.train=x.csv"]))
    cfg = checked.config
    assert set(cfg.trainer) == {f.name for f in dataclasses.fields(TrainerConfig)}
    assert cfg.optim.weight_decay == OptimConfig().weight_decay and cfg.trainer.ema.decay is None
    assert set(cfg.data) == {f.name for f in dataclasses.fields(DataConfig)}
    assert set(cfg.task) == {"name", "label_smoothing"}
    assert sorted(p.parent.name for p in paths.conf_dir().rglob("*.yaml")) == ["data"] * 11 + ["launcher"]


def test_plus_syntax_is_kept():
    checked = preflight(parse_invocation(["+trainer.num_threads=2"]))
    assert checked.run.trainer.num_threads == 2


def problems_of(args):
    with pytest.raises(ConfigError) as info:
        preflight(parse_invocation(args))
    return info.value.problems


def test_all_problems_reported_at_once_with_suggestions():
    problems = problems_of(["trainer.max_stpes=5", "trainer.batch_size=abc", "optim.lr=-1", "trainer.precision=bf61"])
    text = "\n".join(problems)
    assert "trainer.max_stpes: unknown key (did you mean 'max_steps'?)" in text
    assert "trainer.batch_size: expected an integer, got 'abc'" in text
    assert "optim.lr: must be > 0.0" in text
    assert "trainer.precision" in text and "'bf16'" in text
    assert len(problems) == 4


def test_unknown_group_option_lists_choices():
    (problem,) = problems_of(["backbone=bret"])
    assert "backbone: unknown option 'bret' (did you mean 'bert'?)" in problem
    assert "gpt" in problem and "vit" in problem


def test_unknown_recipe_lists_available():
    with pytest.raises(ConfigError) as info:
        parse_invocation(["recipe=bert_topic"])
    message = str(info.value)
    assert "did you mean 'bert_topics'" in message and "vit_digits" in message


def test_task_and_backbone_must_fit():
    (problem,) = problems_of(["backbone=vit"])
    assert "needs backbone bert or gpt" in problem


def test_missing_required_data_path():
    (problem,) = problems_of(["recipe=text_csv"])
    assert problem.startswith("data.train: required")


def test_sweep_values_are_checked_for_groups():
    (problem,) = problems_of(["backbone=bert,gtp", "-m"])
    assert "'gtp'" in problem
