"""`fmctl probe`: frozen features, linear and k-NN probes, the feature cache, and the
one-line errors of sources without labelled data."""
import io
import json

import pytest
from rich.console import Console

from fmctl.errors import ConfigError, RunFolderError
from fmctl.probe.run import probe


def quiet():
    return Console(file=io.StringIO(), width=200)


@pytest.fixture(scope="module")
def probed(tiny_bert_run, tmp_path_factory):
    """The fine-tuned tiny BERT and the same architecture at random init, probed on the
    run's own reviews (its data is the default)."""
    out = tmp_path_factory.mktemp("probe")
    trained = probe(str(tiny_bert_run), ["progress=off", f"out={out / 'trained'}"], console=quiet())
    random = probe(str(tiny_bert_run), ["progress=off", "init=random", f"out={out / 'random'}"], console=quiet())
    return out, trained, random


def test_trained_backbone_beats_its_random_init(probed):
    out, trained, random = probed
    assert trained["examples"] == {"train": 432, "validation": 48}     # the run's own split of 480 reviews
    assert trained["reported_on"] == "validation" and trained["pooling"] == "mean"
    # fine-tuning put the sentiment into the features (1.000 / 0.833 measured); random weights
    # give a linear probe bag-of-words features (0.958) and cosine neighbours little (0.667)
    assert trained["linear"]["validation_accuracy"] >= 0.95
    assert trained["linear"]["validation_accuracy"] > random["linear"]["validation_accuracy"]
    assert trained["knn"]["validation_accuracy"] > random["knn"]["validation_accuracy"] + 0.1
    assert list(trained["linear"]["validation_accuracy_by_C"]) == ["0.0001", "0.001", "0.01", "0.1", "1.0", "10.0",
                                                                   "100.0"]
    saved = json.loads((out / "trained" / "metrics.json").read_text())
    assert saved["linear"] == trained["linear"] and (out / "trained" / "table.md").read_text().count("|") > 10


def test_second_probe_reads_cached_features(probed, tiny_bert_run, monkeypatch):
    """Other k, C and pooling: the features come from the cache, the encoder is never built."""
    out, trained, _ = probed
    from fmctl.backbones.bert import Bert

    def refuse(*args, **kwargs):
        raise AssertionError("re-embedded")

    monkeypatch.setattr(Bert, "encoder", refuse)
    again = probe(str(tiny_bert_run), ["progress=off", f"out={out / 'trained'}", "k=3", "pooling=cls", "C=[0.1,1.0]"],
                  console=quiet())
    assert again["features"] == trained["features"] and again["knn"]["k"] == 3 and again["pooling"] == "cls"
    assert again["linear"]["C"] in (0.1, 1.0)
    with pytest.raises(ConfigError, match="pooling: 'last' is not offered by this backbone; choose auto, mean, cls"):
        probe(str(tiny_bert_run), ["progress=off", f"out={out / 'trained'}", "pooling=last"], console=quiet())


def test_image_backbone_probe(tiny_vit_run, tmp_path):
    result = probe(str(tiny_vit_run), ["progress=off", f"out={tmp_path}"], console=quiet())
    assert result["modality"] == "image" and result["pooling"] == "pooled" and result["feature_width"] == 48
    assert result["linear"]["validation_accuracy"] >= 0.75  # bars: horizontal or vertical


def test_sources_without_labelled_data_are_one_line_errors(tiny_bert_run, tmp_path):
    with pytest.raises(ConfigError, match=r"is a model folder without a run, with no labelled text data to probe on; "
                                          r"give data=topics or data.train=FILE"):
        probe(str(tiny_bert_run / "model"), ["progress=off"], console=quiet())
    with pytest.raises(RunFolderError, match="does not exist"):
        probe(str(tmp_path / "nothing"), [], console=quiet())
    with pytest.raises(ConfigError, match="data: unknown option 'topix' \\(did you mean 'topics'"):
        probe(str(tiny_bert_run / "model"), ["data=topix"], console=quiet())


def test_two_tower_sources_name_their_tower():
    from fmctl.probe.source import Source, modality_of

    family = type("TwoTower", (), {"modalities": ("image", "text")})()
    source = Source("clip", __import__("pathlib").Path("clip"), None, family, None, None)
    assert modality_of(source, "text") == "text"
    with pytest.raises(ConfigError, match="is a image\\+text model; choose tower=image or tower=text"):
        modality_of(source, None)
