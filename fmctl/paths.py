"""Where the shipped config groups and recipes live.

In a source checkout (and an editable install) they are the top-level `conf/` and
`recipes/` folders; a wheel carries them as the `fmctl/_conf` and `fmctl/_recipes`
package folders. Users' own recipes are found in `./recipes/` of the working directory.
"""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def conf_dir() -> Path:
    for candidate in (_PACKAGE.parent / "conf", _PACKAGE / "_conf"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("fmctl's conf/ folder is missing from the installation")


def shipped_recipes_dir() -> Path:
    for candidate in (_PACKAGE.parent / "recipes", _PACKAGE / "_recipes"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("fmctl's recipes/ folder is missing from the installation")


def recipe_dirs() -> list[Path]:
    """Search order for recipe=NAME: the user's ./recipes first, then the shipped ones."""
    dirs = []
    local = Path.cwd() / "recipes"
    if local.is_dir():
        dirs.append(local.resolve())
    shipped = shipped_recipes_dir().resolve()
    if shipped not in dirs:
        dirs.append(shipped)
    return dirs


def config_groups() -> list[str]:
    """The config groups: conf/'s folders and the groups made from schemas (config/store.py)."""
    from fmctl.config.store import schema_options

    folders = {p.name for p in conf_dir().iterdir() if p.is_dir() and not p.name.startswith("_")}
    return sorted(folders | set(schema_options()))


def group_options(group: str) -> list[str]:
    """A group's options: its YAML files in conf/ and its schema-made options; names that
    start with '_' are bases other options extend, not choices."""
    from fmctl.config.store import schema_options

    folder = conf_dir() / group
    names = {p.stem for p in folder.glob("*.yaml")} if folder.is_dir() else set()
    names |= set(schema_options().get(group, {}))
    return sorted(n for n in names if not n.startswith("_"))


def cache_dir() -> Path:
    """Where fmctl writes generated data (built-in datasets); FMCTL_CACHE overrides it."""
    import os

    root = os.environ.get("FMCTL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fmctl")
    return Path(root)


# Config keys that name local files or folders, relative to where the command ran.
_PATH_KEYS = (("data", "train"), ("data", "validation"), ("data", "test"), ("data", "prepared"),
              ("backbone", "pretrained"), ("backbone", "tokenizer"), ("base",),
              # a two-tower backbone's towers, and a contrastive task's zero-shot image folder
              ("backbone", "image", "pretrained"), ("backbone", "text", "pretrained"),
              ("backbone", "text", "tokenizer"), ("task", "zero_shot"))


def absolute_local_paths(cfg: dict) -> dict:
    """The config with every relative path that exists from the working directory made
    absolute. Why: a run folder's config.yaml is read again by `eval`, `export`, `customize`
    and resume from wherever those run, and `data.test=test.csv` would otherwise point at
    a different (or no) file there. Hub ids, `pkg:` paths and paths that do not exist
    here are left as written."""
    def fix(value: object) -> object:
        if not isinstance(value, str) or not value or value.startswith("pkg:") or Path(value).expanduser().is_absolute():
            return value
        where = Path(value).expanduser()
        return str(where.resolve()) if where.exists() else value

    for keys in _PATH_KEYS:
        node = cfg
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and keys[-1] in node:
            node[keys[-1]] = fix(node[keys[-1]])
    ops = cfg.get("customize")
    for op in ops.values() if isinstance(ops, dict) else ops or []:
        if isinstance(op, dict) and "teacher" in op:
            op["teacher"] = fix(op["teacher"])
    return cfg
