"""The on-disk cache of fine-tuned baselines (and of their outputs on the training data, which
distillation reuses), keyed by everything that determines them.

An entry is a folder with one payload file (a ``save_pretrained`` model's weights, or the
teacher outputs) plus ``entry.json`` (the key's inputs, the stats and the sha256 of the
payload). It is built in a temporary folder and
renamed into place, so a crash leaves no half entry; an entry whose weights no longer
match their checksum is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchsuite.fileio import file_sha256

CACHE_ENV = "BENCHSUITE_CACHE_DIR"
WEIGHTS = "model.safetensors"


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "benchsuite"


def key_of(inputs: dict[str, Any]) -> str:
    payload = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def cached_entry(root: Path, kind: str, key: str, *, payload: str = WEIGHTS) -> dict[str, Any] | None:
    """The entry's metadata if it is complete and its payload matches its checksum, else None."""
    folder = root / kind / key
    meta_file = folder / "entry.json"
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text())
        intact = file_sha256(folder / payload) == meta["weights_sha256"]
    except (OSError, json.JSONDecodeError, KeyError):
        intact = False
    if not intact:
        shutil.rmtree(folder, ignore_errors=True)  # corrupt or half-written: rebuild
        return None
    meta["path"] = str(folder)
    return meta


def build_entry(root: Path, kind: str, key: str, inputs: dict[str, Any],
                build: Callable[[Path], dict[str, Any]], *, payload: str = WEIGHTS) -> dict[str, Any]:
    """Run ``build(tmp_folder)`` (which saves the payload there and returns stats) and publish it."""
    final = root / kind / key
    tmp = root / kind / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        stats = build(tmp)
        meta = {"key": key, "inputs": inputs, "stats": stats, "weights_sha256": file_sha256(tmp / payload)}
        (tmp / "entry.json").write_text(json.dumps(meta, indent=2, default=str))
        if final.exists():  # another process finished first; keep theirs (same key, same weights)
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    meta["path"] = str(final)
    return meta


def pack_entry(folder: str | Path) -> dict[str, Any]:
    """The entry in ``folder`` as plain data (its files' bytes and ``entry.json``), to ship to a machine whose
    cache lacks it: the Ray executor sends fine-tuned baselines and teacher outputs this way when there is no
    shared file system. The checksum is the one the entry was built with, not read again here."""
    folder = Path(folder)
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != "entry.json"}
    return {"kind": folder.parent.name, "meta": json.loads((folder / "entry.json").read_text()), "files": files}


def install_entry(root: Path, packed: dict[str, Any], *, payload: str = WEIGHTS) -> dict[str, Any]:
    """Put a packed entry into the cache under ``root`` (unless an intact copy is there) and return its
    metadata; the payload's checksum must match the one it was packed with."""
    kind, meta = packed["kind"], packed["meta"]
    found = cached_entry(root, kind, meta["key"], payload=payload)
    if found is not None:
        return found

    def write(folder: Path) -> dict[str, Any]:
        for name, data in packed["files"].items():
            (folder / name).write_bytes(data)
        return meta["stats"]

    entry = build_entry(root, kind, meta["key"], meta["inputs"], write, payload=payload)
    if entry["weights_sha256"] != meta["weights_sha256"]:
        shutil.rmtree(entry["path"], ignore_errors=True)
        raise RuntimeError(f"cache entry {kind}/{meta['key']} arrived damaged: its payload's sha256 does not match")
    return entry
