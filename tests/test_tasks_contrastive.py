"""task=contrastive, its parts: the CLIP and SigLIP losses (repeated captions are no
negatives; every rank's pairs are negatives under torch.distributed), the retrieval
figures, LiT's locked tower, the pair reader's errors and the config checks."""
from __future__ import annotations

import csv
import math
import os
import socket

import pytest
import torch
import torch.nn.functional as F

from fmctl.config.schema import DataConfig
from fmctl.data.image_text import read_image_text
from fmctl.errors import ConfigError, DataError
from fmctl.tasks.contrastive_loss import contrastive_loss
from fmctl.tasks.retrieval import chance, figures, ranks
from tests.helpers import compose


def unit(rows: int, dim: int = 8, seed: int = 0):
    return F.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_clip_loss_is_the_symmetric_cross_entropy_and_repeated_captions_are_not_negatives():
    image, text, scale = unit(5, seed=1), unit(5, seed=2), torch.tensor(10.0)
    logits = scale * image @ text.T
    expected = (F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.T, torch.arange(5))) / 2
    distinct = torch.arange(5)
    assert float(contrastive_loss("clip", image, text, scale, None, distinct)) == pytest.approx(float(expected), 1e-6)
    # pairs 1 and 3 share a caption: neither is the other's negative, each keeps its own positive
    shared = torch.tensor([0, 1, 2, 1, 4])
    masked = logits.clone()
    masked[1, 3] = masked[3, 1] = float("-inf")
    expected = (F.cross_entropy(masked, torch.arange(5)) + F.cross_entropy(masked.T, torch.arange(5))) / 2
    got = contrastive_loss("clip", image, text, scale, None, shared)
    assert float(got) == pytest.approx(float(expected), 1e-6)
    assert float(got) < float(contrastive_loss("clip", image, text, scale, None, distinct))


def test_siglip_loss_is_a_sigmoid_per_pair_over_the_batch_size():
    image, text, scale, bias = unit(4, seed=3), unit(4, seed=4), torch.tensor(10.0), torch.tensor(-10.0)
    logits = scale * image @ text.T + bias
    signs = 2 * torch.eye(4) - 1
    expected = -F.logsigmoid(signs * logits).sum() / 4
    assert float(contrastive_loss("siglip", image, text, scale, bias, torch.arange(4))) == pytest.approx(
        float(expected), 1e-6)
    shared = torch.tensor([0, 0, 1, 2])
    terms = F.logsigmoid(signs * logits)
    terms[0, 1] = terms[1, 0] = 0.0
    assert float(contrastive_loss("siglip", image, text, scale, bias, shared)) == pytest.approx(
        float(-terms.sum() / 4), 1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_gradients(rank: int, world: int, port: int, kind: str, image, text, ids, out) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    rows = slice(rank * 3, rank * 3 + 3)
    mine_image = image[rows].clone().requires_grad_(True)
    mine_text = text[rows].clone().requires_grad_(True)
    loss = contrastive_loss(kind, F.normalize(mine_image, dim=-1), F.normalize(mine_text, dim=-1),
                            torch.tensor(7.0), torch.tensor(-2.0), ids[rows])
    loss.backward()
    out[rank] = (float(loss), mine_image.grad.clone(), mine_text.grad.clone())
    dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_under_two_processes_every_rank_pairs_are_negatives(kind):
    """Two gloo ranks with three pairs each train as one process with all six: the mean of
    their losses is the one-process loss, and DDP's gradient average (the mean over ranks
    of each rank's gradients) matches its gradients. A caption repeated across the ranks
    is masked there too."""
    import torch.multiprocessing as mp

    image, text = torch.randn(6, 8, generator=torch.Generator().manual_seed(5)), \
        torch.randn(6, 8, generator=torch.Generator().manual_seed(6))
    ids = torch.tensor([0, 1, 2, 3, 1, 5])   # pair 1 (rank 0) and pair 4 (rank 1) share a caption
    manager = mp.Manager()
    out = manager.dict()
    mp.start_processes(_rank_gradients, args=(2, _free_port(), kind, image, text, ids, out), nprocs=2,
                       start_method="spawn")
    whole_image, whole_text = image.clone().requires_grad_(True), text.clone().requires_grad_(True)
    loss = contrastive_loss(kind, F.normalize(whole_image, dim=-1), F.normalize(whole_text, dim=-1),
                            torch.tensor(7.0), torch.tensor(-2.0), ids)
    loss.backward()
    assert (out[0][0] + out[1][0]) / 2 == pytest.approx(float(loss.detach()), rel=1e-5)
    # the rank-r rows' gradient (sent back by gather_with_grad), halved by DDP's average
    grads = torch.cat([out[0][1], out[1][1]]) / 2, torch.cat([out[0][2], out[1][2]]) / 2
    assert torch.allclose(grads[0], whole_image.grad, atol=1e-6)
    assert torch.allclose(grads[1], whole_text.grad, atol=1e-6)


def test_retrieval_ranks_recalls_and_median_with_a_shared_caption():
    images = torch.eye(4)
    c0, c1, c2 = [0.8, 0.6, 0, 0], [0, 0.6, 0.8, 0], [0, 0, 0.6, 0.8]
    texts = torch.tensor([c0, c1, c2, c2])   # images 2 and 3 share caption c2
    ids = torch.tensor([0, 1, 2, 2])
    found = ranks(images, texts, ids)
    # image 1's caption c1 ties with c0 (0.6): a tie counts against it; image 2 prefers c1 to its c2
    assert found["i2t"].tolist() == [1, 2, 2, 1]
    # c1 prefers image 2 to its image 1; c2 has two hits and the best (image 3) comes first
    assert found["t2i"].tolist() == [1, 2, 1]
    got = figures(found)
    assert (got["i2t_r1"], got["i2t_r5"], got["t2i_r1"]) == (0.5, 1.0, pytest.approx(2 / 3))
    assert (got["i2t_median_rank"], got["t2i_median_rank"]) == (1.5, 1.0)
    assert got["recall_sum"] == pytest.approx(0.5 + 1 + 1 + 2 / 3 + 1 + 1)
    collapsed = ranks(torch.ones(4, 4) / 2, torch.ones(4, 4) / 2, ids)   # every embedding alike
    assert collapsed["i2t"].tolist() == [3, 3, 3, 3] and figures(collapsed)["i2t_r1"] == 0.0
    assert chance(ids)["chance_i2t_r1"] == pytest.approx(1 / 3)
    # a caption with 2 of the 4 images is hit at rank 1 by chance half the time, the others a quarter
    assert chance(ids)["chance_t2i_r1"] == pytest.approx((0.25 + 0.25 + 0.5) / 3)


def write_pairs(folder, rows, name="pairs.csv"):
    path = folder / name
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        writer.writerows(rows)
    return path


@pytest.fixture()
def icons(tmp_path):
    import shutil

    theme = "/usr/share/icons/Adwaita/32x32/status"
    (tmp_path / "img").mkdir()
    names = ["battery-level-20-symbolic.symbolic.png", "audio-volume-high-symbolic.symbolic.png"]
    for name in names:
        shutil.copy(f"{theme}/{name}", tmp_path / "img" / name)
    return tmp_path, [f"img/{n}" for n in names]


def test_the_pair_reader_names_file_and_row_for_every_bad_input(icons):
    folder, images = icons
    data = DataConfig(image_column="image", text_column="caption")
    good = read_image_text(write_pairs(folder, [[images[0], "a status icon: battery low"],
                                                [images[1], "a status icon: audio volume high"]]), data)
    assert [r.path for r in good] == [folder / i for i in images] and good[1].line == 3
    table = write_pairs(folder, [[images[0], "a status icon: battery low"], ["img/gone.png", "a lost icon"]])
    with pytest.raises(DataError) as caught:
        read_image_text(table, data)
    assert str(caught.value) == (f"{table}:3: image '{folder / 'img/gone.png'}' not found (paths in the image column "
                                 f"are relative to the table's folder); fix the file or the row, or set "
                                 f"data.drop_bad_images=true to drop such rows")
    warnings = []
    kept = read_image_text(table, DataConfig(image_column="image", text_column="caption", drop_bad_images=True),
                           warnings)
    assert len(kept) == 1 and warnings == [f"{table}: dropped 1 of 2 rows whose image is missing or does not decode "
                                           f"(data.drop_bad_images=true; lines 3)"]
    (folder / "img" / "cut.png").write_bytes((folder / images[0]).read_bytes()[:60])
    table = write_pairs(folder, [[images[0], "a status icon: battery low"], ["img/cut.png", "a cut icon"]])
    with pytest.raises(DataError, match=rf"^{table}:3: {folder / 'img/cut.png'}: cannot read image"):
        read_image_text(table, data)
    table = write_pairs(folder, [[images[0], "   "]])
    with pytest.raises(DataError) as caught:
        read_image_text(table, data)
    assert str(caught.value) == (f"{table}:2: empty caption in column 'caption' (data.text_column) for image "
                                 f"'{images[0]}'; every pair needs its text")
    with pytest.raises(DataError) as caught:
        read_image_text(table, DataConfig(image_column="picture", text_column="caption"))
    assert str(caught.value) == (f"{table}: no column 'picture' for data.image_column; columns are: image, caption")


def test_config_checks_refuse_what_would_train_wrong(tmp_path):
    with pytest.raises(ConfigError) as caught:
        compose("clip_icons", ["trainer.batch_size=1", "trainer.grad_accum=4", "task.unlocked_layers=2",
                               "task.templates=['an icon of {}','a photo']"], tmp_path / "run")
    assert caught.value.problems == [
        "trainer.batch_size: contrastive training needs at least 2 pairs per batch (each pair's negatives are the "
        "others), got 1",
        "trainer.grad_accum: 4 would give each pair only its micro-batch's negatives; contrastive training does not "
        "accumulate: raise trainer.batch_size or add processes (trainer.nproc), whose embeddings all serve as negatives",
        "task.unlocked_layers: only with task.lock=image or task.lock=text",
        "task.templates[1]: 'a photo' needs exactly one '{}' where the class name goes"]
    with pytest.raises(ConfigError, match="task 'contrastive' needs backbone clip, got 'bert'"):
        compose("clip_icons", ["backbone=bert"], tmp_path / "run")


def test_lit_locks_one_tower_but_its_top_blocks(tmp_path):
    from fmctl.backbones import family
    from fmctl.tasks.contrastive_lock import lock_tower
    from tests.test_backbone_clip import CAPTIONS, tiny

    clip = family("clip")
    prep = clip.preprocessor(tiny(), training_texts=lambda: CAPTIONS)
    model = clip.build(tiny(), "contrastive", prep)
    counts = lock_tower(model, "text", 1, "clip")
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("text_tower.") for n in frozen)
    assert not any(n.startswith("text_tower.encoder.layer.2.") for n in frozen)       # the top block trains
    assert any(n.startswith("text_tower.encoder.layer.1.") for n in frozen)
    assert counts["frozen"] == sum(p.numel() for n, p in model.named_parameters() if n in frozen)
    model = clip.build(tiny(), "contrastive", prep)
    lock_tower(model, "image", 0, "clip")
    assert all(not p.requires_grad for p in model.image_tower.parameters())
    assert all(p.requires_grad for p in model.text_tower.parameters())
    assert model.image_projection.weight.requires_grad and model.logit_scale.requires_grad
    assert all(m.drop_prob == 0 for m in model.image_tower.modules() if type(m).__name__ == "DropPath")
    with pytest.raises(ConfigError, match="task.unlocked_layers: 5 blocks asked for but the image tower has 2"):
        lock_tower(clip.build(tiny(), "contrastive", prep), "image", 5, "clip")


def test_zero_shot_needs_two_classes(tmp_path):
    from fmctl.tasks.zero_shot import average_prompts, check_classes, prompts

    with pytest.raises(DataError) as caught:
        check_classes(["status"], f"task.zero_shot: {tmp_path}")
    assert str(caught.value) == (f"task.zero_shot: {tmp_path}: 1 class ('status'); zero-shot classification chooses "
                                 f"between at least two")
    assert prompts(["file_type", "device"], ["a {} icon", "an icon of a {}"]) == [
        "a file type icon", "an icon of a file type", "a device icon", "an icon of a device"]
    averaged = average_prompts([[1.0, 0.0], [0.0, 1.0], [3.0, 0.0], [3.0, 0.0]], 2)
    assert torch.allclose(torch.from_numpy(averaged), torch.tensor([[1 / math.sqrt(2)] * 2, [1.0, 0.0]]))
