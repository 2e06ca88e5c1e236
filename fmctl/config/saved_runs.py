"""Configs that come from an earlier run folder's config.yaml: read back (with overrides)
for eval, export and predict, or made into the recipe of `fmctl customize base=RUN`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fmctl.config.schema import RunConfig
from fmctl.errors import ConfigError


def load_run_config(run_dir: Path, overrides: list[str]) -> tuple[Any, RunConfig]:
    """A run folder's config.yaml with key=value overrides applied, validated."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from fmctl.config.validate import validate

    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"{run_dir}: not an fmctl run folder (no config.yaml)")
    cfg = OmegaConf.load(config_file)
    parser = OverridesParser.create()
    problems = []
    for text in overrides:
        try:
            ov = parser.parse_overrides([text])[0]
        except Exception as exc:
            problems.append(f"override '{text}': not a valid key=value override ({str(exc).splitlines()[0]})")
            continue
        if ov.is_sweep_override():
            problems.append(f"{ov.key_or_group}: sweeps are not supported here")
            continue
        OmegaConf.update(cfg, ov.key_or_group, ov.value(), merge=False, force_add=True)
    if problems:
        raise ConfigError(problems)
    return cfg, validate(cfg)


def customize_invocation(args: list[str]) -> list[str]:
    """`fmctl customize base=RUN_DIR ...` without recipe=: the base run's own config (its
    data, task, backbone and trainer settings) is the recipe, minus what belonged to that
    run's customization; base= and overrides apply on top."""
    if any(a.startswith("recipe=") for a in args):
        return args
    base = next((a.split("=", 1)[1] for a in args if a.lstrip("+").startswith("base=")), None)
    if not base:
        return args
    config_file = Path(base).expanduser() / "config.yaml"
    if not config_file.is_file():
        return args
    import atexit
    import shutil
    import tempfile

    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(config_file))
    for key in ("customize", "base", "report", "run_dir", "overwrite", "defaults"):
        cfg.pop(key, None)
    folder = Path(tempfile.mkdtemp(prefix="fmctl-base-recipe-"))
    atexit.register(shutil.rmtree, folder, True)
    recipe = folder / "config.yaml"
    recipe.write_text(f"# the config of base run {base}\n" + OmegaConf.to_yaml({"defaults": [{"customize": []}, "_self_"],
                                                                                 **cfg}), encoding="utf-8")
    return [f"recipe={recipe}", *args]
