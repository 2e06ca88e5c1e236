"""The clip backbone: two towers built by their own families, named by tower in the
declared structure, saved in each library's layout and loadable without fmctl as
model/README.md says, its config checked with nested keys, and saved projections that do
not fit their towers refused."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from fmctl import backbones
from fmctl.backbones import structure_of
from fmctl.config.schema import ClipBackboneConfig, TextBackboneConfig, VisionBackboneConfig
from fmctl.errors import ConfigError, ModelError
from tests.helpers import compose

CAPTIONS = ["a status icon: battery low", "an action icon: edit copy", "a device icon: printer network",
            "a colour place icon: folder documents"] * 10


def tiny(**extra) -> ClipBackboneConfig:
    return ClipBackboneConfig(image=VisionBackboneConfig(hidden_size=32, num_layers=2, num_heads=2, image_size=16),
                              text=TextBackboneConfig(hidden_size=32, num_layers=3, num_heads=2, vocab_size=120,
                                                      max_positions=64), embed_dim=16, **extra)


def built(cfg: ClipBackboneConfig):
    clip = backbones.family("clip")
    prep = clip.preprocessor(cfg, training_texts=lambda: CAPTIONS)
    torch.manual_seed(0)
    model = clip.build(cfg, "contrastive", prep).eval()
    return model, {**prep, **clip.preprocessor(cfg, model=model)}


def embed(model, prep, texts, pixels):
    batch = prep["text"](texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return (model.encode_image(pixels),
                model.encode_text(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model, prep = built(tiny())
    folder = tmp_path_factory.mktemp("clip") / "model"
    backbones.family("clip").save(model, folder, prep)
    return model, prep, folder


def test_groups_are_named_by_tower_and_the_pair_own_parts_are_the_head():
    model, _ = built(tiny())
    groups = structure_of(model, "clip").groups(model)
    assert list(groups) == ["image.embeddings", "image.blocks.0", "image.blocks.1", "image.final_norm",
                            "text.embeddings", "text.blocks.0", "text.blocks.1", "text.blocks.2", "head"]
    assert groups["head"] == ["logit_scale", "image_projection.weight", "text_projection.weight"]
    assert model.text_tower.pooler is None  # mean pooling: BERT's pooler would get no gradient
    assert {"logit_scale", "image_tower.pos_embed"} <= structure_of(model, "clip").no_decay
    assert float(model.scale().detach()) == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)   # exp(10) is far above CLIP's clamp
    assert float(model.scale().detach()) == pytest.approx(100.0, rel=1e-5)
    assert backbones.family("clip").position_table(model) == 64


def test_save_load_round_trip_and_layout(saved):
    model, prep, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "image", "projections.safetensors",
                                                        "text"]
    assert (folder / "text" / "tokenizer.json").is_file() and (folder / "image" / "model.safetensors").is_file()
    assert backbones.of_folder(folder).name == "clip"
    loaded, loaded_prep = backbones.family("clip").load(folder)
    pixels = torch.randn(3, 3, 16, 16)
    for a, b in zip(embed(model, prep, CAPTIONS[:3], pixels), embed(loaded.eval(), loaded_prep, CAPTIONS[:3], pixels)):
        assert torch.allclose(a, b, atol=1e-6)
    assert loaded_prep["image"] == prep["image"]


def test_model_folder_loads_without_fmctl_as_its_readme_says(saved, tmp_path):
    """The README's snippet, run with fmctl made unimportable, gives fmctl's embeddings."""
    model, prep, folder = saved
    readme = (folder / "README.md").read_text()
    code = readme.split("```python\n")[1].split("```")[0]   # run as written, next to model/
    from PIL import Image

    Image.new("RGB", (20, 16), (200, 30, 30)).save(tmp_path / "red.png")
    script = ("import sys; sys.modules['fmctl'] = None\nfrom PIL import Image\n"
              f"pil_image = Image.open({str(tmp_path / 'red.png')!r})\n" + code +
              "\nimport json; print(json.dumps({'image': image_embeds.tolist(), 'text': text_embeds.tolist()}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=folder.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    from fmctl.data.images import build_transform, open_image

    pixels = build_transform(prep["image"], train=False, augment=False)(open_image(tmp_path / "red.png", "RGB"))
    image, text = embed(model, prep, ["a status icon: battery low"], pixels.unsqueeze(0))
    assert torch.allclose(torch.tensor(theirs["image"]), image, atol=1e-5)
    assert torch.allclose(torch.tensor(theirs["text"]), text, atol=1e-5)


def test_saved_projections_that_disagree_in_size_are_refused(saved, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    _, _, folder = saved
    broken = tmp_path / "model"
    shutil.copytree(folder, broken)
    own = load_file(str(broken / "projections.safetensors"))
    own["text_projection.weight"] = torch.zeros(24, own["text_projection.weight"].shape[1])
    save_file(own, str(broken / "projections.safetensors"))
    with pytest.raises(ModelError) as caught:
        backbones.family("clip").load(broken)
    assert str(caught.value) == (f"{broken}/projections.safetensors: the projections disagree in size: "
                                 f"image_projection gives 16 dimensions, text_projection 24; both towers must "
                                 f"project to one embed_dim")
    own["text_projection.weight"] = torch.zeros(16, 48)
    save_file(own, str(broken / "projections.safetensors"))
    with pytest.raises(ModelError, match="text_projection reads 48 features but the text tower in .* gives 32"):
        backbones.family("clip").load(broken)


def test_a_tower_can_come_from_an_earlier_clip_run(saved):
    model, prep, folder = saved
    cfg = tiny()
    cfg.text.pretrained = str(folder.parent)           # the run folder: its model/text/ is used
    reused, reused_prep = built(cfg)
    assert reused_prep["text"].get_vocab() == prep["text"].get_vocab()
    ids = prep["text"](CAPTIONS[:2], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.allclose(reused.text_tower(**ids).last_hidden_state, model.text_tower(**ids).last_hidden_state)


def test_config_errors_name_the_nested_key(tmp_path):
    with pytest.raises(ConfigError) as caught:
        compose("clip_icons", ["backbone.image.patch_sise=4", "backbone.text.dropout=2", "backbone.embed_dim=big"],
                tmp_path / "run")
    assert caught.value.problems == [
        "backbone.image.patch_sise: unknown key (did you mean 'patch_size'?)",
        "backbone.text.dropout: must be < 1.0, got 2.0",
        "backbone.embed_dim: expected an integer, got 'big'"]
    with pytest.raises(ConfigError) as caught:
        compose("clip_icons", ["backbone.text.name=t5", "backbone.image.name=bert"], tmp_path / "run")
    assert caught.value.problems == ["backbone.image.name: 'bert' cannot be the image tower; use vit",
                                     "backbone.text.name: 't5' cannot be the text tower; use bert or gpt"]
    with pytest.raises(ModelError) as caught:
        built(ClipBackboneConfig(image=VisionBackboneConfig(pretrained=str(tmp_path / "nowhere")), embed_dim=16))
    assert str(caught.value).startswith(f"backbone.image.pretrained: '{tmp_path / 'nowhere'}' does not exist")


def test_a_gpt_text_tower_reads_the_last_real_token_and_round_trips(tmp_path):
    cfg = tiny()
    cfg.text.name = "gpt"
    model, prep = built(cfg)
    assert model.text_pooling == "last" and type(model.text_tower).__name__ == "GPT2Model"
    assert "Ġ" in "".join(prep["text"].get_vocab())          # the byte-level BPE the gpt family trains
    backbones.family("clip").save(model, tmp_path / "model", prep)
    loaded, loaded_prep = backbones.family("clip").load(tmp_path / "model")
    texts = ["a status icon: battery low", "an action icon: edit copy and paste"]   # two lengths: padding
    pixels = torch.randn(2, 3, 16, 16)
    first, again = embed(model, prep, texts, pixels), embed(loaded.eval(), loaded_prep, texts, pixels)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(first, again))
    alone = embed(model, prep, texts[:1], pixels[:1])[1]
    assert torch.allclose(alone, first[1][:1], atol=1e-5)   # right padding does not move the last real token
