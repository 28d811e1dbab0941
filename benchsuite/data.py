"""Where datasets come from: the local mirror named by ``BENCHSUITE_DATA_DIR``, else the Hub.

The mirror's layout is ``<dir>/<repo_id>/<config>/<split>.parquet`` (that of
``../shared/data/hub``). A ``MANIFEST.json`` in the mirror or its parent, when
present, says which splits are incomplete; that note travels into the record.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from benchsuite.errors import UsageError
from benchsuite.fileio import file_sha256
from benchsuite.records import HeldApart, SplitInfo
from benchsuite.tasks.spec import TaskSpec

DATA_DIR_ENV = "BENCHSUITE_DATA_DIR"


@dataclass(frozen=True)
class TaskData:
    train: datasets.Dataset
    eval: datasets.Dataset
    train_info: SplitInfo
    eval_info: SplitInfo
    dev: datasets.Dataset | None = None  # held out of training and evaluation (spec train_from_eval)
    dev_info: SplitInfo | None = None


def data_dir() -> Path | None:
    value = os.environ.get(DATA_DIR_ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise UsageError(f"{DATA_DIR_ENV}={value} is not a directory; point it at a mirror such as ../shared/data/hub")
    return path


def load_task_data(
    spec: TaskSpec, *, max_train: int | None, max_eval: int | None, seed: int
) -> TaskData:
    """The task's training and evaluation rows, sampled with a fixed seed.

    ``max_train``/``max_eval`` of None use every row. When the train split is missing and
    the spec allows a fallback, training rows are held apart from the eval split (grouped by
    ``group_by`` so that, e.g., no SQuAD article is in both) and the record says so.
    """
    ds = spec.dataset
    eval_full, eval_source = _load_split(spec, ds.eval_split)
    note_eval = _manifest_note(ds.repo_id, ds.config, ds.eval_split)
    try:
        train_full, train_source = _load_split(spec, ds.train_split)
        train_note = _manifest_note(ds.repo_id, ds.config, ds.train_split)
        eval_rows = np.arange(len(eval_full))
        train_rows = np.arange(len(train_full))
    except MissingSplit as missing:
        if ds.train_from_eval:  # its held-apart groups are the whole training pool
            train_full, train_source = None, ""
            train_note = (f"FALLBACK: {missing.path or 'train split'} is listed missing in the mirror's "
                          f"MANIFEST.json; trained on the groups of {ds.eval_split} held apart alone")
        elif not ds.train_fallback:
            raise
        else:
            fraction = float(ds.train_fallback.get("fraction", 0.5))
            group_by = ds.train_fallback.get("group_by")
            train_rows, eval_rows = _hold_apart(eval_full, [fraction], group_by, seed)
            train_full, train_source = eval_full, eval_source
            by = f", grouped by {group_by!r} so no group is in both" if group_by else ""
            train_note = (f"FALLBACK: {missing.path or 'train split'} is listed missing in the mirror's "
                          f"MANIFEST.json; trained on {fraction:.0%} of "
                          f"{ds.eval_split} held apart{by} (seed {seed}); scored on the rest")
            note_eval = (note_eval + "; " if note_eval else "") + "the part held apart for training is excluded"
    if ds.train_from_eval:
        return _with_eval_groups(spec, (eval_full, eval_source), (train_full, train_source), train_note, note_eval,
                                 max_train=max_train, max_eval=max_eval, seed=seed)
    train_sel = _sample(train_rows, max_train, seed)
    eval_sel = _sample(eval_rows, max_eval, seed + 1)
    return TaskData(
        train=train_full.select(train_sel),
        eval=eval_full.select(eval_sel),
        train_info=_info(spec, ds.train_split if train_full is not eval_full else ds.eval_split,
                         train_full, train_source, train_rows, train_sel, max_train, seed, train_note),
        eval_info=_info(spec, ds.eval_split, eval_full, eval_source, eval_rows, eval_sel, max_eval, seed + 1,
                        note_eval),
    )


def _with_eval_groups(spec: TaskSpec, evaluated: tuple[datasets.Dataset, str],
                      trained: tuple[datasets.Dataset | None, str], train_note: str, note_eval: str, *,
                      max_train: int | None, max_eval: int | None, seed: int) -> TaskData:
    """Training rows = the train split's (if any) + whole groups of the eval split; then a dev part held out
    of both; the rest is evaluated. No group is in two parts, and the records list each part's groups."""
    ds = spec.dataset
    (eval_full, eval_source), (train_full, train_source) = evaluated, trained
    how = ds.train_from_eval
    group_by = how.get("group_by")
    fractions = [float(how["fraction"]), float(how.get("dev_fraction", 0))]
    extra, dev_rows, eval_rows = _hold_apart(eval_full, fractions, group_by, seed)
    n_train = 0 if train_full is None else len(train_full)
    # One index space over both files: the train split's rows, then the eval split's after them.
    pool = np.concatenate([np.arange(n_train), n_train + extra])
    train_sel = _sample(pool, max_train, seed)
    from_train, from_eval = train_sel[train_sel < n_train], train_sel[train_sel >= n_train] - n_train
    parts = [eval_full.select(from_eval)] if train_full is None else [train_full.select(from_train),
                                                                       eval_full.select(from_eval)]
    train = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    eval_fp = _fingerprint(eval_full, eval_source)
    files = [(ds.train_split, train_source, _fingerprint(train_full, train_source))] if train_full is not None else []
    files.append((ds.eval_split, eval_source, eval_fp))
    by = f"whole {group_by!r} groups" if group_by else "rows"
    held = HeldApart(split=ds.eval_split, group_by=group_by, groups=_groups(eval_full, extra, group_by),
                     rows=len(extra), seed=seed)
    sampled = max_train is not None and max_train < len(pool)
    joined = (f"{len(extra):,} rows of {ds.eval_split} join training ({by}, {fractions[0]:.0%} held apart, "
              f"seed {seed}); no {group_by or 'row'} is also evaluated")
    note = f"{train_note}; {joined}" if train_note else joined
    train_info = SplitInfo(
        repo_id=ds.repo_id, config=ds.config, split="+".join(f[0] for f in files),
        source=" + ".join(f[1] for f in files),
        fingerprint=eval_fp if len(files) == 1 else hashlib.sha256("+".join(f[2] for f in files).encode()).hexdigest(),
        rows_available=len(pool), rows_used=len(train_sel),
        selection=f"{len(train_sel)} rows sampled without replacement (seed {seed})" if sampled else "all rows",
        selection_sha256=_selection_sha(train_sel), note=note, held_apart=held)
    dev = dev_info = None
    if len(dev_rows):
        dev = eval_full.select(dev_rows)
        dev_info = _info(spec, ds.eval_split, eval_full, eval_source, dev_rows, dev_rows, None, seed,
                         f"held out of training and evaluation ({by}, {fractions[1]:.0%}); scored during the "
                         f"baseline's training for its learning curve")
        dev_info = replace(dev_info, held_apart=HeldApart(split=ds.eval_split, group_by=group_by,
                                                          groups=_groups(eval_full, dev_rows, group_by),
                                                          rows=len(dev_rows), seed=seed))
    eval_sel = _sample(eval_rows, max_eval, seed + 1)
    note_eval = (note_eval + "; " if note_eval else "") + (
        "the groups held apart for training" + (" and dev" if dev is not None else "") + " are excluded")
    return TaskData(train=train, eval=eval_full.select(eval_sel), train_info=train_info,
                    eval_info=_info(spec, ds.eval_split, eval_full, eval_source, eval_rows, eval_sel, max_eval,
                                    seed + 1, note_eval),
                    dev=dev, dev_info=dev_info)


def _groups(full: datasets.Dataset, rows: np.ndarray, group_by: str | None) -> list[str]:
    if group_by is None:
        return []
    values = full[group_by][:]
    return sorted({str(values[i]) for i in rows})


class MissingSplit(UsageError):
    def __init__(self, message: str, path: Path | None = None):
        super().__init__(message)
        self.path = path


def _load_split(spec: TaskSpec, split: str) -> tuple[datasets.Dataset, str]:
    ds = spec.dataset
    root = data_dir()
    if root is not None:
        path = _mirror_path(root, spec, split)
        if not path.is_file():
            listed = _manifest_missing(ds.repo_id, ds.config, split)
            if listed:  # known absent: the spec's fallback, if it has one, may stand in
                raise MissingSplit(f"task {spec.name}: the local mirror has no {path} (its MANIFEST.json says: "
                                   f"{listed}); unset {DATA_DIR_ENV} to use the Hub", path)
            raise UsageError(f"task {spec.name}: the local mirror has no {path}, and its MANIFEST.json does not "
                             f"list that split as missing, so the mirror is incomplete; restore the file (or list "
                             f"it under not_included in MANIFEST.json), or unset {DATA_DIR_ENV} to use the Hub")
        expected = _manifest_entry(ds.repo_id, ds.config, split).get("sha256")
        if expected and _file_sha256(path) != expected:
            raise UsageError(f"task {spec.name}: {path} does not match the sha256 its MANIFEST.json lists "
                             f"({expected[:12]}...): the file is corrupt or was replaced; restore it in the mirror")
        try:
            return datasets.Dataset.from_parquet(str(path)), str(path)
        except Exception as exc:  # pyarrow and datasets raise several types for a damaged file
            first_line = (str(exc).splitlines() or [""])[0][:200]
            raise UsageError(f"task {spec.name}: {path} is not a readable parquet file ({type(exc).__name__}: "
                             f"{first_line}); restore it in the mirror") from None
    try:
        return datasets.load_dataset(ds.repo_id, ds.config, split=split), "hub"
    except Exception as exc:  # the Hub raises many types: connection, auth, missing config
        # Never a fallback: a network error must stop the run, not change the experiment.
        raise UsageError(
            f"task {spec.name}: could not load {ds.repo_id}/{ds.config} split {split!r} from the Hugging Face Hub "
            f"({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}); check the network, or for "
            f"offline use set {DATA_DIR_ENV} to a local mirror laid out as <dir>/<repo_id>/<config>/<split>.parquet "
            f"(e.g. ../shared/data/hub)"
        ) from None


def _sample(rows: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or limit >= len(rows):
        return rows
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, size=limit, replace=False))


def _hold_apart(full: datasets.Dataset, fractions: list[float], group_by: str | None, seed: int) -> list[np.ndarray]:
    """The rows split into ``len(fractions) + 1`` sorted parts: part i holds about ``fractions[i]`` of the rows
    (whole groups of ``group_by``, taken in a seeded order until the running total reaches the target; the
    last group taken may overshoot it), the last part the rest."""
    rng = np.random.default_rng(seed)
    targets = np.cumsum(fractions) * len(full)
    if group_by is None:
        order = rng.permutation(len(full))
        cuts = [0, *(int(round(t)) for t in targets), len(full)]
        return [np.sort(order[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
    groups = np.asarray(full[group_by][:])
    names = np.unique(groups)
    rng.shuffle(names)
    counts = {name: int(n) for name, n in zip(*np.unique(groups, return_counts=True), strict=True)}
    part_of: dict[Any, int] = {}
    taken, part = 0, 0
    for name in names:
        while part < len(targets) and taken >= targets[part]:
            part += 1
        part_of[name] = part
        taken += counts[name]
    labels = np.array([part_of[g] for g in groups])
    return [np.flatnonzero(labels == p) for p in range(len(fractions) + 1)]


def _info(spec, split, full, source, rows, sel, limit, seed, note) -> SplitInfo:
    sampled = limit is not None and limit < len(rows)
    how = f"{len(sel)} rows sampled without replacement (seed {seed})" if sampled else "all rows"
    return SplitInfo(
        repo_id=spec.dataset.repo_id,
        config=spec.dataset.config,
        split=split,
        source=source,
        fingerprint=_fingerprint(full, source),
        rows_available=len(rows),
        rows_used=len(sel),
        selection=how,
        selection_sha256=_selection_sha(sel),
        note=note,
    )


def _fingerprint(full: datasets.Dataset, source: str) -> str:
    return _file_sha256(Path(source)) if source != "hub" else full._fingerprint


def _selection_sha(sel: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(sel, dtype=np.int64).tobytes()).hexdigest()[:16]


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = file_sha256(path)
    return _SHA_CACHE[key]


def _mirror_path(root: Path, spec: TaskSpec, split: str) -> Path:
    return root / spec.dataset.repo_id / spec.dataset.config / f"{split}.parquet"


def _manifest() -> dict[str, Any]:
    """The mirror's MANIFEST.json ({} when the mirror has none); an unreadable one is an error, since it
    holds the checksums and the list of splits known to be missing."""
    root = data_dir()
    if root is None:
        return {}
    for candidate in (root / "MANIFEST.json", root.parent / "MANIFEST.json"):
        if candidate.is_file():
            try:
                manifest = json.loads(candidate.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise UsageError(f"{candidate} is unreadable ({type(exc).__name__}: {exc}); its checksums and "
                                 f"list of missing splits are needed: restore it from the mirror") from None
            if not isinstance(manifest, dict) or not isinstance(manifest.get("files", []), list):
                raise UsageError(f"{candidate} is not a mirror manifest (expected an object with a 'files' "
                                 f"list); restore it from the mirror")
            return manifest
    return {}


def _manifest_entry(repo_id: str, config: str, split: str) -> dict[str, Any]:
    """The MANIFEST.json ``files`` entry of one split ({} when it lists none)."""
    for entry in _manifest().get("files", []):
        if (entry.get("hub_repo"), entry.get("config"), entry.get("split")) == (repo_id, config, split):
            return entry
    return {}


def _manifest_note(repo_id: str, config: str, split: str) -> str:
    entry = _manifest_entry(repo_id, config, split)
    if entry and entry.get("rows") != entry.get("expected_rows"):
        return (f"{repo_id}/{config} {split}: the local mirror holds {entry['rows']:,} of the "
                f"{entry['expected_rows']:,} rows of this split (its MANIFEST.json)")
    return ""


def _manifest_missing(repo_id: str, config: str, split: str) -> str:
    for entry in _manifest().get("not_included", []):
        what = entry.get("what", "")
        if repo_id in what and config in what.split() and split in what:
            return f"{what}: {entry.get('why', '')}"
    return ""


def local_availability(spec: TaskSpec) -> str:
    """How the task's data can be had offline: "" when the local mirror holds both splits; else what is
    missing (and whether the spec's fallback covers it). Without ``BENCHSUITE_DATA_DIR``, the Hub is needed."""
    root = data_dir()
    if root is None:
        return f"Hub (set {DATA_DIR_ENV} for a local mirror)"
    ds = spec.dataset
    missing = [s for s in (ds.train_split, ds.eval_split) if not _mirror_path(root, spec, s).is_file()]
    if not missing:
        return ""
    if missing == [ds.train_split] and (ds.train_fallback or ds.train_from_eval) and _manifest_missing(
            ds.repo_id, ds.config, ds.train_split):
        return f"no {ds.train_split} split offline: trains on part of {ds.eval_split} held apart"
    return f"not offline: the mirror has no {', '.join(missing)} split"
