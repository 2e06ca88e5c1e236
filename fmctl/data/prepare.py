"""`fmctl data prepare`: raw documents -> clean -> deduplicate -> tokenizer -> shards.

Three streaming passes over the corpus, each holding one batch of documents at a time:
(1) clean, deduplicate and split off validation documents into temporary JSONL files;
(2) train the tokenizer on the training documents; (3) tokenise in batches (the Rust
tokenizer uses every core) and pack into memory-mapped shards. Everything is built in a
temporary folder and renamed into place; a second run with the same inputs and settings
finds prepared.json's fingerprint and reuses the result.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmctl import __version__
from fmctl.config.prepare_schema import PrepareConfig
from fmctl.data.cleaning import Cleaner
from fmctl.data.corpus import expand_inputs, is_txt, iter_documents, txt_documents_mode
from fmctl.data.dedup import Deduplicator
from fmctl.data.shards import ShardWriter, file_digest, open_shards, token_dtype
from fmctl.errors import ConfigError, DataError, RunFolderError

FORMAT_VERSION = 1
# Version of the rule that txt_mode=auto applies; part of the fingerprint when it decides
# how a .txt input splits into documents, so a corpus split by an older rule is not reused.
# 1: paragraphs when the first 64 KB held any blank line; 2: txt_documents_mode.
TXT_AUTO_RULE = 2


@dataclass
class PrepareResult:
    out: Path
    report: dict[str, Any]
    cached: bool


def fingerprint(cfg: PrepareConfig, files: list[Path], txt_auto_rule: int = TXT_AUTO_RULE) -> str:
    """Inputs (path, size, mtime) and every setting that changes the output."""
    settings = dataclasses.asdict(cfg)
    for volatile in ("out", "workers", "keep_text", "overwrite", "input"):
        settings.pop(volatile)
    payload: dict[str, Any] = {"version": FORMAT_VERSION, "settings": settings,
                               "files": [(str(f), f.stat().st_size, int(f.stat().st_mtime)) for f in files]}
    if cfg.txt_mode == "auto" and txt_auto_rule > 1 and any(is_txt(f) for f in files):
        payload["txt_auto_rule"] = txt_auto_rule
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def prepare_corpus(cfg: PrepareConfig, console: Any) -> PrepareResult:
    if not cfg.out:
        raise ConfigError("out: required; the folder to write the prepared corpus to (out=DIR)")
    files = expand_inputs(cfg.input)
    given_tokenizer = tokenizer_folder(cfg.tokenizer.path) if cfg.tokenizer.path else None  # before hours of cleaning
    out = Path(cfg.out).expanduser()
    key = fingerprint(cfg, files)
    cached = _reuse(out, key, cfg, files, console)
    if cached is not None:
        console.print(f"prepared corpus is up to date (same inputs and settings): {out}")
        return PrepareResult(out, cached, True)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        report = _run(cfg, files, tmp, console, given_tokenizer)
        meta = {"format_version": FORMAT_VERSION, "fmctl_version": __version__, "fingerprint": key,
                "inputs": [str(f) for f in files], "settings": dataclasses.asdict(cfg), **report.pop("_meta")}
        (tmp / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        (tmp / "prepared.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PrepareResult(out, report, False)


def _reuse(out: Path, key: str, cfg: PrepareConfig, files: list[Path], console: Any) -> dict[str, Any] | None:
    """The earlier report when `out` holds this very corpus, complete and intact; None
    when it must be (re)built. A damaged corpus of the same fingerprint is rebuilt (a
    missing or corrupt shard, index or tokenizer file); another corpus is not clobbered."""
    meta_file = out / "prepared.json"
    if not out.exists() or not any(out.iterdir()):
        return None
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else None
    except (ValueError, OSError):
        meta = None
    if not isinstance(meta, dict):
        if cfg.overwrite:
            return None
        state = "an unreadable prepared.json" if meta_file.is_file() else "files that are not a prepared corpus"
        raise RunFolderError(f"out: '{out}' already holds {state}; choose another out= or pass overwrite=true")
    if meta.get("fingerprint") != key:
        if cfg.overwrite:
            return None
        if meta.get("fingerprint") == fingerprint(cfg, files, txt_auto_rule=1):
            raise RunFolderError(f"out: '{out}' was prepared from these inputs and settings by an older fmctl whose "
                                 f"txt_mode=auto could make one document of a whole .txt file; pass overwrite=true "
                                 f"to prepare it again (or txt_mode=line|paragraph)")
        raise RunFolderError(f"out: '{out}' holds a corpus prepared from other inputs or settings; pass "
                             f"overwrite=true to replace it or choose another out=")
    try:
        load_prepared(out, verify=True, meta=meta)
        report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    except DataError as exc:
        problem = str(exc).split("; re-run fmctl data prepare")[0]
        console.print(f"prepared corpus is damaged ({problem}); preparing it again", markup=False, soft_wrap=True)
        return None
    except (ValueError, OSError):
        console.print(f"prepared corpus has no readable report.json; preparing it again: {out}", markup=False)
        return None
    return report


def _batches(items: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _run(cfg: PrepareConfig, files: list[Path], tmp: Path, console: Any,
         given_tokenizer: Path | None) -> dict[str, Any]:
    timings: dict[str, float] = {}
    input_bytes = sum(f.stat().st_size for f in files)

    # Pass 1: clean, deduplicate, split.
    start = time.perf_counter()
    cleaner = Cleaner(cfg.clean)
    counts = {"documents_in": 0}
    alphabet: set[str] = set()
    txt_modes: dict[str, str] = {}

    def raw_documents() -> Iterator[str]:
        for path in files:
            mode = cfg.txt_mode
            if is_txt(path):
                mode = txt_modes[str(path)] = txt_documents_mode(path, cfg.txt_mode)
            for text in iter_documents(path, cfg.text_column, mode):
                counts["documents_in"] += 1
                yield text

    def cleaned() -> Iterator[str]:
        for text in raw_documents():
            kept = cleaner.clean(text)
            if kept is not None:
                yield kept

    workers = cfg.workers or os.cpu_count() or 1
    dedup = Deduplicator(cfg.dedup, workers)
    every = round(1 / cfg.validation_fraction) if cfg.validation_fraction else 0
    kept_docs = {"train": 0, "validation": 0}
    with open(tmp / "docs_train.jsonl", "w", encoding="utf-8") as train_out, \
            open(tmp / "docs_validation.jsonl", "w", encoding="utf-8") as val_out:
        index = 0
        for batch in dedup.filter(_batches(cleaned(), cfg.batch_docs)):
            for text in batch:
                index += 1
                split = "validation" if every and index % every == 0 else "train"
                (val_out if split == "validation" else train_out).write(json.dumps(text, ensure_ascii=False) + "\n")
                kept_docs[split] += 1
                alphabet.update(text)
    timings["clean_dedup_s"] = time.perf_counter() - start
    if counts["documents_in"] == 0:
        raise DataError(f"input: the {len(files)} input file(s) hold no documents")
    if kept_docs["train"] == 0:
        culprit = max(cleaner.counts, key=cleaner.counts.get) if cleaner.counts else "deduplication"
        raise DataError(f"input: every one of {counts['documents_in']} documents was removed (most by "
                        f"{culprit.replace('removed_by_', 'clean.')}); relax that rule")

    # Pass 2: tokenizer.
    start = time.perf_counter()
    tokenizer = _tokenizer(cfg, tmp / "docs_train.jsonl", alphabet, given_tokenizer)
    tokenizer.save_pretrained(tmp / "tokenizer")
    tokenizer_files = {f.name: file_digest(f) for f in sorted((tmp / "tokenizer").iterdir()) if f.is_file()}
    notes = []
    if given_tokenizer is None:
        from fmctl.data.tokenizer_training import vocab_note

        note = vocab_note(cfg.tokenizer.kind, cfg.tokenizer.vocab_size, tokenizer)
        notes += [note] if note else []
    separator = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if separator is None:
        raise DataError("tokenizer.path: the tokenizer has neither a separator nor an end-of-text token")
    timings["tokenizer_s"] = time.perf_counter() - start

    # Pass 3: tokenise and pack.
    start = time.perf_counter()
    dtype = token_dtype(len(tokenizer))
    shards = []
    tokens = {}
    for split in ("train", "validation"):
        writer = ShardWriter(tmp, split, dtype, cfg.shard_tokens)
        for batch in _batches(_read_docs(tmp / f"docs_{split}.jsonl"), cfg.batch_docs):
            ids = tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]  # long documents are fine here
            writer.add([doc + [separator] for doc in ids])
        written = writer.close()
        shards += written
        tokens[split] = sum(s["tokens"] for s in written)
    timings["tokenize_pack_s"] = time.perf_counter() - start
    if not cfg.keep_text:
        for split in ("train", "validation"):
            (tmp / f"docs_{split}.jsonl").unlink()

    total_s = sum(timings.values())
    report = {
        "files": len(files), "input_bytes": input_bytes, **counts,
        **{k: v for k, v in sorted(cleaner.counts.items())},
        "removed_exact_duplicates": dedup.removed_exact, "removed_near_duplicates": dedup.removed_near,
        "documents_train": kept_docs["train"], "documents_validation": kept_docs["validation"],
        "tokens_train": tokens["train"], "tokens_validation": tokens["validation"],
        "vocab_size": len(tokenizer),
        **({"vocab_size_requested": cfg.tokenizer.vocab_size} if given_tokenizer is None else {}),
        "token_dtype": dtype,
        **({"txt_mode": txt_modes} if txt_modes else {}),
        **({"notes": notes} if notes else {}),
        **{k: round(v, 3) for k, v in timings.items()},
        "mb_per_s": round(input_bytes / 1e6 / total_s, 3) if total_s else None,
        "_meta": {"shards": shards, "dtype": dtype, "separator_id": separator, "vocab_size": len(tokenizer),
                  "tokenizer_files": tokenizer_files,
                  "tokenizer_kind": cfg.tokenizer.kind if not cfg.tokenizer.path else "given",
                  **({"tokenizer_source": str(given_tokenizer.resolve())} if given_tokenizer else {})},
    }
    return report


def summary_lines(report: dict[str, Any], txt_mode: str = "auto") -> list[str]:
    """What the numbers table cannot show: how each .txt file was split into documents,
    and why the vocabulary is not the size asked for."""
    lines = []
    modes = report.get("txt_mode") or {}
    if modes:
        described = {"line": "one document per line", "paragraph": "blank-line-separated paragraphs"}
        parts = []
        for mode in ("line", "paragraph"):
            names = [Path(f).name for f, m in modes.items() if m == mode]
            if names:
                shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
                parts.append(f"{described[mode]}: {shown}")
        hint = "; set txt_mode=line|paragraph to choose" if txt_mode == "auto" else ""
        lines.append(f".txt documents ({txt_mode}): {'; '.join(parts)}{hint}")
    return lines + [f"note: {note}" for note in report.get("notes", [])]


def _read_docs(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")


def tokenizer_folder(spec: str) -> Path:
    """tokenizer.path as a local folder holding a tokenizer: a tokenizer or
    save_pretrained folder, or an fmctl run folder (its model/, found as
    backbone.pretrained finds it). Never a hub id: a typo must not start a download."""
    from fmctl.models.pretrained import resolve

    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"tokenizer.path: '{spec}' does not exist; give a tokenizer folder, a save_pretrained model "
                        f"folder or an fmctl run folder")
    folder = Path(resolve(str(path), "tokenizer.path", weights=()))
    if not folder.is_dir():
        raise DataError(f"tokenizer.path: '{folder}' is not a folder; give a tokenizer folder, a save_pretrained "
                        f"model folder or an fmctl run folder")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise DataError(f"tokenizer.path: '{folder}' holds no tokenizer files ({', '.join(TOKENIZER_FILES)}); give "
                        f"a tokenizer folder, a save_pretrained model folder or an fmctl run folder (its model/)")
    return folder


def _tokenizer(cfg: PrepareConfig, docs: Path, alphabet: set[str], given: Path | None) -> Any:
    if given is not None:
        from fmctl.models.text import load_tokenizer_only

        try:
            return load_tokenizer_only(given)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            reason = " ".join(str(exc).split())[:160]
            raise DataError(f"tokenizer.path: the tokenizer in '{given}' does not load ({reason})") from None
    from fmctl.data.tokenizer_training import train_tokenizer

    return train_tokenizer(_read_docs(docs), cfg.tokenizer.kind, cfg.tokenizer.vocab_size, model_max_length=512,
                           alphabet=alphabet)


def load_prepared(folder: Path, verify: bool = True, meta: dict[str, Any] | None = None,
                  ) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """prepared.json and the opened shards per split, checked for truncation/corruption,
    and the tokenizer's files checked to be there (and intact when verifying)."""
    folder = Path(folder)
    meta = _read_meta(folder) if meta is None else _checked_meta(meta, folder / "prepared.json")
    by_split: dict[str, list[Any]] = {"train": [], "validation": []}
    for record in meta["shards"]:
        by_split[record["split"]].append(record)
    shards = {split: open_shards(folder, records, meta["dtype"], verify) for split, records in by_split.items()}
    check_tokenizer(folder, meta, verify)
    return meta, shards


def _read_meta(folder: Path) -> dict[str, Any]:
    meta_file = folder / "prepared.json"
    if not meta_file.is_file():
        raise DataError(f"data.prepared: '{folder}' is not a prepared corpus (no prepared.json); "
                        f"make one with fmctl data prepare input=... out={folder}")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise DataError(f"{meta_file}: unreadable ({exc.__class__.__name__}); re-run fmctl data prepare") from None
    return _checked_meta(meta, meta_file)


def _checked_meta(meta: Any, meta_file: Path) -> dict[str, Any]:
    """prepared.json with the fields shards are opened by (an edited one is named, not a KeyError)."""
    fields = {"name", "split", "tokens", "bytes", "blake2b"}
    if (not isinstance(meta, dict) or not isinstance(meta.get("shards"), list) or "dtype" not in meta
            or not all(isinstance(r, dict) and fields <= r.keys() for r in meta["shards"])):
        raise DataError(f"{meta_file}: not the prepared.json fmctl data prepare writes; re-run fmctl data prepare")
    return meta


def check_tokenizer(folder: Path, meta: dict[str, Any], verify: bool) -> Path:
    """tokenizer/ with every file prepare wrote (checksums when verifying). Loading a
    missing folder would send transformers to the Hugging Face Hub instead."""
    where = Path(folder) / "tokenizer"
    if not where.is_dir():
        raise DataError(f"{where}: tokenizer folder missing; re-run fmctl data prepare")
    recorded: dict[str, str] | None = meta.get("tokenizer_files")
    if recorded is None:  # prepared.json from before tokenizer checksums
        recorded = {"tokenizer_config.json": ""}
        if not any((where / n).is_file() for n in ("tokenizer.json", "vocab.txt", "vocab.json")):
            raise DataError(f"{where}: holds no tokenizer.json or vocab file; re-run fmctl data prepare")
    for name, digest in recorded.items():
        path = where / name
        if not path.is_file():
            raise DataError(f"{path}: tokenizer file missing; re-run fmctl data prepare")
        if verify and digest and file_digest(path) != digest:
            raise DataError(f"{path}: checksum mismatch; the tokenizer file is corrupt; re-run fmctl data prepare")
    return where


def load_prepared_tokenizer(folder: Path, meta: dict[str, Any]) -> Any:
    """The corpus's own tokenizer, from its folder only (never the hub)."""
    from fmctl.models.text import load_tokenizer_only

    where = check_tokenizer(folder, meta, verify=False)
    try:
        return load_tokenizer_only(where)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        reason = " ".join(str(exc).split())[:120]
        raise DataError(f"{where}: the tokenizer does not load ({reason}); re-run fmctl data prepare") from None
