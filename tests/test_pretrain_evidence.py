"""Evidence that pretraining transfers (slow: about 3 minutes on 2 idle cores).

Words come in four latent groups that co-occur in unlabelled text. The labelled set is
tiny (8 texts per group) and uses only 6 of each group's 16 words; validation and test
use the other 10. A model fine-tuned from scratch has never seen those words and is near
chance; one pretrained with MLM on the unlabelled text has learnt which words go
together, and classifies texts made of words it never saw with a label.
"""
import csv
import random

import pytest
from rich.console import Console

from fmctl import pipeline
from fmctl.config.compose import schema_from_overrides
from fmctl.config.prepare_schema import PrepareConfig
from fmctl.data.prepare import prepare_corpus
from tests.helpers import compose

QUIET = Console(quiet=True)
SHAPE = ["backbone.hidden_size=64", "backbone.num_layers=2", "backbone.num_heads=2", "trainer.progress=off",
         "trainer.precision=fp32", "data.max_length=32"]


def write_task(root, sentences=8000, seed=0):
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ru", "te", "zo", "pa", "ne", "vi", "su", "do", "fe", "gi", "ha", "jo", "bu"]
    words: set[str] = set()
    while len(words) < 64:
        words.add("".join(rng.choice(syllables) for _ in range(3)))
    ordered = sorted(words)
    rng.shuffle(ordered)
    groups = [ordered[i * 16:(i + 1) * 16] for i in range(4)]
    filler = "the a of and to in is was for on".split()

    def sentence(pool, n):
        return " ".join(rng.choice(pool) if rng.random() < 0.8 else rng.choice(filler) for _ in range(n))

    with open(root / "corpus.txt", "w", encoding="utf-8") as handle:
        for _ in range(sentences):
            handle.write(sentence(rng.choice(groups), rng.randint(24, 30)) + "\n")
    for split, per_group, words_used in (("train", 8, slice(0, 6)), ("validation", 40, slice(6, 16)),
                                         ("test", 40, slice(6, 16))):
        with open(root / f"{split}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            for g, group in enumerate(groups):
                for _ in range(per_group):
                    writer.writerow([sentence(group[words_used], rng.randint(6, 10)), f"group{g}"])


@pytest.mark.slow
def test_pretrained_backbone_beats_scratch_with_few_labels(tmp_path):
    write_task(tmp_path)
    cfg = schema_from_overrides(PrepareConfig, [f"input={tmp_path / 'corpus.txt'}", f"out={tmp_path / 'prepared'}",
                                                "tokenizer.vocab_size=200", "dedup.near=false"])
    prepare_corpus(cfg, QUIET)
    raw, run = compose("bert_mlm", [f"data.prepared={tmp_path / 'prepared'}", *SHAPE, "trainer.max_steps=800",
                                    "trainer.eval_every=400", "optim.lr=2e-3"], tmp_path / "pretrain")
    pretrained = pipeline.pretrain(run, raw, console=QUIET)

    finetune = [f"data.train={tmp_path / 'train.csv'}", f"data.validation={tmp_path / 'validation.csv'}",
                f"data.test={tmp_path / 'test.csv'}", *SHAPE, "trainer.max_steps=60", "trainer.batch_size=16",
                "optim.lr=1e-3", "trainer.eval_every=20"]
    raw, run = compose("text_csv", [*finetune, f"backbone.pretrained={pretrained.run_dir}"], tmp_path / "from_mlm")
    transferred = pipeline.finetune(run, raw, console=QUIET).metrics
    # Same architecture and tokenizer, random initialisation.
    raw, run = compose("text_csv", [*finetune, f"backbone.tokenizer={tmp_path / 'prepared' / 'tokenizer'}"],
                       tmp_path / "scratch")
    scratch = pipeline.finetune(run, raw, console=QUIET).metrics
    print(f"test accuracy: pretrained {transferred['test/accuracy']:.3f}, scratch {scratch['test/accuracy']:.3f}")
    assert transferred["test/accuracy"] > 0.8
    assert transferred["test/accuracy"] > scratch["test/accuracy"] + 0.25
