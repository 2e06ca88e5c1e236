"""Fixtures: an isolated fmctl cache and generated datasets shared by the session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import write_reviews_csv, write_shapes_folder


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Built-in datasets go to a per-session cache, not the user's home; no hub access."""
    os.environ["FMCTL_CACHE"] = str(tmp_path_factory.mktemp("fmctl-cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield


@pytest.fixture(scope="session")
def reviews(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reviews")
    return {"train": write_reviews_csv(root / "train.csv", 480, seed=1),
            "test": write_reviews_csv(root / "test.csv", 120, seed=2)}


@pytest.fixture(scope="session")
def shapes(tmp_path_factory) -> Path:
    return write_shapes_folder(tmp_path_factory.mktemp("shapes") / "train", per_class=100, seed=3)
