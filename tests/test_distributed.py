"""torchrun on CPU (gloo): DDP matches one process with the same global batch, FSDP
checkpoints reshard onto one process, and every run writes exactly one run folder."""
import json

import pytest
from safetensors.torch import load_file

from tests.helpers import TINY_TEXT, read_jsonl, run_cli

BASE = ["recipe=text_csv", "data.text_column=Review Text", "data.label_column=sentiment", *TINY_TEXT,
        "backbone.dropout=0", "trainer.max_steps=8", "trainer.log_every=2", "trainer.eval_every=4",
        "data.max_train_examples=256"]


def losses(run_dir):
    return [r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["event"] == "train"]


@pytest.fixture(scope="module")
def single(reviews, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("single") / "run"
    done = run_cli(["finetune", *BASE, f"data.train={reviews['train']}", "trainer.batch_size=16",
                    f"run_dir={run_dir}"], cwd=run_dir.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def test_ddp_two_processes_match_one_with_the_same_global_batch(reviews, single, tmp_path):
    run_dir = tmp_path / "runs" / "ddp"
    done = run_cli(["finetune", *BASE, f"data.train={reviews['train']}", "trainer.batch_size=8", "--nproc", "2",
                    f"run_dir={run_dir}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert losses(run_dir) == pytest.approx(losses(single), rel=1e-5)
    a, b = load_file(str(single / "model" / "model.safetensors")), load_file(str(run_dir / "model" / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["ddp"]  # one run folder, not one per rank
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["strategy"] == "ddp" and manifest["status"] == "completed"
    assert not (tmp_path / "outputs").exists()


def test_fsdp_trains_and_its_sharded_checkpoint_resumes_on_one_process(reviews, single, tmp_path):
    run_dir = tmp_path / "fsdp"
    done = run_cli(["finetune", *BASE, f"data.train={reviews['train']}", "trainer.batch_size=8", "trainer.nproc=2",
                    "trainer.strategy=fsdp", "trainer.checkpoint_every=4", f"run_dir={run_dir}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert losses(run_dir) == pytest.approx(losses(single), rel=1e-4)
    step = run_dir / "checkpoints" / "step_00000008"
    assert (step / "dcp" / ".metadata").is_file() and not (step / "model.safetensors").exists()
    assert (run_dir / "model" / "model.safetensors").is_file()  # consolidated for export
    resumed = run_cli(["finetune", *BASE, f"data.train={reviews['train']}", "trainer.batch_size=16",
                       "trainer.max_steps=10", "trainer.strategy=fsdp", "trainer.resume=auto", f"run_dir={run_dir}"],
                      cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step_00000008" in resumed.stdout
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["steps"] == 10 and manifest["status"] == "completed"


def test_a_sweep_cannot_also_launch_torchrun(tmp_path):
    done = run_cli(["finetune", "optim.lr=1e-3,2e-3", "-m", "trainer.nproc=2"], cwd=tmp_path)
    assert done.returncode == 2 and "cannot also launch torchrun" in done.stderr
