"""Which files feed the train / validation / test splits."""
from __future__ import annotations

from pathlib import Path

from fmctl.config.schema import DataConfig


def builtin_names() -> tuple[str, ...]:
    """The built-in datasets, as DataConfig.builtin lists them (each is also a data= option)."""
    import typing

    hint = typing.get_type_hints(DataConfig)["builtin"]
    return tuple(a for a in typing.get_args(typing.get_args(hint)[0]))


def uses_builtin(data: DataConfig) -> bool:
    """A built-in dataset feeds the run only when no split is given: a user's own file for
    any split turns it off for every split, so one's own data is never mixed with it."""
    return data.builtin is not None and not any((data.train, data.validation, data.test))


def split_paths(data: DataConfig) -> dict[str, Path | None]:
    """The user's paths, or (when none is given) the built-in dataset's splits."""
    chosen = {"train": data.train, "validation": data.validation, "test": data.test}
    builtin: dict[str, Path] = {}
    if not uses_builtin(data):
        pass
    elif data.builtin == "topics":
        from fmctl.data.builtin import topics_files

        builtin = topics_files()
    elif data.builtin == "digits":
        from fmctl.data.builtin import digits_folders

        builtin = digits_folders()
    elif data.builtin == "icon_scenes":
        from fmctl.data.icon_scenes import icon_scenes_folders

        builtin = icon_scenes_folders()
    return {split: Path(value).expanduser() if value else builtin.get(split) for split, value in chosen.items()}


def fingerprint(path: Path | None) -> dict | None:
    """Size and modification time: enough to tell later whether a file changed."""
    if path is None or not path.exists():
        return None
    if path.is_file():
        stat = path.stat()
        return {"path": str(path.resolve()), "bytes": stat.st_size, "mtime": int(stat.st_mtime)}
    files = [p for p in path.rglob("*") if p.is_file()]
    return {"path": str(path.resolve()), "files": len(files), "bytes": sum(p.stat().st_size for p in files)}
