"""benchsuite.data: rows from the local mirror (BENCHSUITE_DATA_DIR), sampled and recorded; clear errors."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
from pathlib import Path

import datasets
import huggingface_hub.constants
import numpy as np
import pytest

from benchsuite.data import DATA_DIR_ENV, SplitInfo, TaskData, load_task_data
from benchsuite.errors import UsageError
from benchsuite.tasks import load_task

MIRROR = Path("/work/shared/data/hub")
MANIFEST = MIRROR.parent / "MANIFEST.json"

pytestmark = pytest.mark.skipif(not (MIRROR / "nyu-mll" / "glue" / "sst2").is_dir(),
                                reason=f"the data mirror {MIRROR} is not here")


@pytest.fixture
def mirror(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(DATA_DIR_ENV, str(MIRROR))
    return MIRROR


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- sampling from the real mirror ----------------------------------------------------------------


def test_sst2_sample_is_deterministic_for_a_seed_and_differs_across_seeds(mirror: Path) -> None:
    spec = load_task("sst2")
    first = load_task_data(spec, max_train=50, max_eval=20, seed=0)
    again = load_task_data(spec, max_train=50, max_eval=20, seed=0)
    other = load_task_data(spec, max_train=50, max_eval=20, seed=1)
    assert isinstance(first, TaskData)
    assert (len(first.train), len(first.eval)) == (50, 20)
    train_idx, eval_idx = first.train["idx"][:], first.eval["idx"][:]
    assert len(set(train_idx)) == 50 and len(set(eval_idx)) == 20  # without replacement
    assert train_idx == sorted(train_idx)  # kept in file order
    assert all(0 <= i < 67349 for i in train_idx) and all(0 <= i < 872 for i in eval_idx)
    assert train_idx == again.train["idx"][:] and eval_idx == again.eval["idx"][:]
    assert first.train_info == again.train_info and first.eval_info == again.eval_info
    assert train_idx != other.train["idx"][:] and eval_idx != other.eval["idx"][:]
    assert first.train_info.selection_sha256 != other.train_info.selection_sha256
    assert first.eval_info.selection_sha256 != other.eval_info.selection_sha256
    # the rows are the file's rows: idx is the row number in the mirror's sst2 files
    assert first.train.column_names == ["sentence", "label", "idx"]
    assert first.train.features["label"].names == ["negative", "positive"]


def test_sst2_split_info_fields(mirror: Path) -> None:
    data = load_task_data(load_task("sst2"), max_train=50, max_eval=None, seed=3)
    train_file = mirror / "nyu-mll/glue/sst2/train.parquet"
    eval_file = mirror / "nyu-mll/glue/sst2/validation.parquet"
    assert isinstance(data.train_info, SplitInfo)
    assert data.train_info == SplitInfo(
        repo_id="nyu-mll/glue", config="sst2", split="train", source=str(train_file),
        fingerprint=_sha256(train_file), rows_available=67349, rows_used=50,
        selection="50 rows sampled without replacement (seed 3)",
        selection_sha256=data.train_info.selection_sha256, note="")
    # the MANIFEST's sha256 of the file is the same fingerprint
    assert data.train_info.fingerprint == "e0b2b778cb4f0a165c9465546907aa94ea3ee27523726ebfe8f9ab198fd97b3a"
    assert len(data.train_info.selection_sha256) == 16
    # max_eval None: every row, in file order; the eval sample uses seed + 1 (no sampling here)
    info = data.eval_info
    assert (info.split, info.source, info.fingerprint) == ("validation", str(eval_file), _sha256(eval_file))
    assert (info.rows_available, info.rows_used, info.selection) == (872, 872, "all rows")
    assert data.eval["idx"][:] == list(range(872))
    # a limit at or above the split's size is "all rows" too
    assert load_task_data(load_task("sst2"), max_train=10, max_eval=872, seed=0).eval_info.selection == "all rows"


def test_squad_trains_on_the_mirror_and_whole_validation_articles_none_evaluated(mirror: Path) -> None:
    data = load_task_data(load_task("squad"), max_train=None, max_eval=1000, seed=42)
    info, held = data.train_info, data.train_info.held_apart
    # the mirror's 4,370 questions (12 articles) and whole validation articles, about half of its 10,570
    from_validation = held.rows
    assert (info.split, info.rows_available, info.rows_used) == ("train+validation", 4370 + from_validation,
                                                                 4370 + from_validation)
    assert 5285 <= from_validation < 5285 + 810  # the last article taken may overshoot; the largest has 810
    assert "4,370 of the 87,599 rows" in info.note and "no title is also evaluated" in info.note
    assert info.source == (f"{mirror}/rajpurkar/squad/plain_text/train.parquet + "
                           f"{mirror}/rajpurkar/squad/plain_text/validation.parquet")
    assert (held.split, held.group_by, held.seed) == ("validation", "title", 42)
    train_titles, eval_titles, dev_titles = (set(d["title"][:]) for d in (data.train, data.eval, data.dev))
    assert set(held.groups) <= train_titles and len(train_titles - set(held.groups)) == 12
    assert set(data.dev_info.held_apart.groups) == dev_titles
    # no article, so no context, in two parts; the three parts of validation cover it
    assert not train_titles & eval_titles and not train_titles & dev_titles and not dev_titles & eval_titles
    assert not set(data.train["context"][:]) & set(data.eval["context"][:])
    assert from_validation + data.dev_info.rows_used + data.eval_info.rows_available == 10570
    assert data.eval_info.rows_used == 1000 and "held apart for training and dev are excluded" in data.eval_info.note
    assert set(data.train.column_names) >= {"id", "title", "context", "question", "answers"}
    # another seed holds apart other articles: another experiment, another selection hash
    other = load_task_data(load_task("squad"), max_train=None, max_eval=1000, seed=7)
    assert other.train_info.held_apart.groups != held.groups
    assert other.train_info.selection_sha256 != info.selection_sha256
    # a training limit samples the pool, both files
    small = load_task_data(load_task("squad"), max_train=300, max_eval=8, seed=42)
    assert small.train_info.rows_used == 300 and len(set(small.train["title"][:]) - set(held.groups)) > 0
    assert set(small.train["title"][:]) & set(held.groups)


def test_squad_without_its_train_split_trains_on_the_articles_held_apart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = MIRROR / "rajpurkar/squad/plain_text/validation.parquet"
    folder = tmp_path / "rajpurkar" / "squad" / "plain_text"
    folder.mkdir(parents=True)
    (folder / "validation.parquet").symlink_to(real)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")  # no arrow copy left behind
    # Not listed as missing: an incomplete mirror, which stops the run instead of changing the experiment.
    with pytest.raises(UsageError, match="does not list that split as missing, so the mirror is incomplete"):
        load_task_data(load_task("squad"), max_train=None, max_eval=None, seed=0)
    (tmp_path / "MANIFEST.json").write_text(json.dumps({"files": [], "not_included": [
        {"what": "rajpurkar/squad plain_text train (87,599)", "why": "left out of this test mirror"}]}))
    data = load_task_data(load_task("squad"), max_train=None, max_eval=None, seed=0)
    train_titles, eval_titles = set(data.train["title"][:]), set(data.eval["title"][:])
    assert train_titles and eval_titles and not train_titles & eval_titles
    assert train_titles == set(data.train_info.held_apart.groups)
    assert len(data.train) + len(data.dev) + len(data.eval) == 10570
    # whole titles are added until 50% of 10,570 = 5,285 rows are reached; the last one may overshoot
    biggest = max(data.train.to_pandas().groupby("title").size())
    assert 5285 <= len(data.train) < 5285 + biggest
    note = data.train_info.note
    assert note.startswith("FALLBACK: ") and str(folder / "train.parquet") in note
    assert "listed missing in the mirror's MANIFEST.json" in note
    assert (data.train_info.split, data.train_info.fingerprint) == ("validation", _sha256(real))
    # sampling keeps the separation
    small = load_task_data(load_task("squad"), max_train=30, max_eval=30, seed=0)
    assert not set(small.train["title"][:]) & set(small.eval["title"][:])


def test_held_apart_parts_are_whole_groups_in_the_asked_proportions() -> None:
    from benchsuite.data import _hold_apart

    rows = datasets.Dataset.from_dict({"g": [f"a{i // 10}" for i in range(100)]})  # 10 groups of 10
    train, dev, rest = _hold_apart(rows, [0.5, 0.2], "g", seed=3)
    assert (len(train), len(dev), len(rest)) == (50, 20, 30)
    groups = [set(np.asarray(rows["g"])[part]) for part in (train, dev, rest)]
    assert not groups[0] & groups[1] and not groups[0] & groups[2] and not groups[1] & groups[2]
    assert sorted(np.concatenate([train, dev, rest]).tolist()) == list(range(100))
    train0, rest0 = _hold_apart(rows, [0.5], None, seed=3)  # row by row
    assert (len(train0), len(rest0)) == (50, 50) and not set(train0) & set(rest0)
    none, rest1 = _hold_apart(rows, [0.5, 0.0], "g", seed=3)[1:]
    assert len(none) == 0 and len(rest1) == 50


# --- missing splits -------------------------------------------------------------------------------


def test_missing_train_split_names_the_file_and_the_manifest_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real mirror lacks qqp entirely; this one holds a 3-row qqp validation beside the real
    # MANIFEST.json (which says the train split is "Not included in this mirror; use the Hub.").
    hub = tmp_path / "hub"
    folder = hub / "nyu-mll" / "glue" / "qqp"
    folder.mkdir(parents=True)
    features = datasets.Features({"question1": datasets.Value("string"), "question2": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["not_duplicate", "duplicate"]),
                                  "idx": datasets.Value("int32")})
    datasets.Dataset.from_dict({"question1": ["a?", "b?", "c?"], "question2": ["a!", "x?", "c!"],
                                "label": [1, 0, 1], "idx": [0, 1, 2]},
                               features=features).to_parquet(str(folder / "validation.parquet"))
    shutil.copy(MANIFEST, tmp_path / "MANIFEST.json")
    monkeypatch.setenv(DATA_DIR_ENV, str(hub))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    with pytest.raises(UsageError) as excinfo:
        load_task_data(load_task("qqp"), max_train=10, max_eval=10, seed=0)
    message = str(excinfo.value)
    assert str(folder / "train.parquet") in message
    assert "nyu-mll/glue qqp train (363,846): Not included in this mirror; use the Hub." in message
    assert DATA_DIR_ENV in message
    assert excinfo.value.path == folder / "train.parquet"


def test_qqp_is_missing_from_the_real_mirror(mirror: Path) -> None:
    with pytest.raises(UsageError, match=r"task qqp: the local mirror has no .*/nyu-mll/glue/qqp/"):
        load_task_data(load_task("qqp"), max_train=10, max_eval=10, seed=0)


# --- fallbacks: train on a held-apart part of the eval split ----------------------------------------


def test_qnli_fallback_holds_training_rows_apart_from_eval_rows(mirror: Path) -> None:
    spec = load_task("qnli")
    data = load_task_data(spec, max_train=None, max_eval=None, seed=0)
    train_idx, eval_idx = set(data.train["idx"][:]), set(data.eval["idx"][:])
    assert not train_idx & eval_idx
    assert train_idx | eval_idx == set(range(5463))  # the whole validation split, in two parts
    # fraction 0.5 of 5,463 rows: round(2731.5) = 2732 (round half to even) for training
    assert (len(train_idx), len(eval_idx)) == (2732, 2731)
    info = data.train_info
    assert info.note.startswith("FALLBACK: ")
    assert str(mirror / "nyu-mll/glue/qnli/train.parquet") in info.note
    assert "50% of validation held apart" in info.note and "(seed 0)" in info.note
    assert (info.split, info.rows_available, info.rows_used) == ("validation", 2732, 2732)
    assert info.source == str(mirror / "nyu-mll/glue/qnli/validation.parquet")
    assert data.eval_info.note == "the part held apart for training is excluded"
    assert (data.eval_info.rows_available, data.eval_info.rows_used) == (2731, 2731)
    # sampled within each part, still disjoint; another seed holds apart other rows
    small = load_task_data(spec, max_train=100, max_eval=40, seed=0)
    small_train, small_eval = set(small.train["idx"][:]), set(small.eval["idx"][:])
    assert (len(small_train), len(small_eval)) == (100, 40)
    assert small_train <= train_idx and small_eval <= eval_idx
    assert set(load_task_data(spec, max_train=None, max_eval=10, seed=1).train["idx"][:]) != train_idx


# --- no mirror ------------------------------------------------------------------------------------


def test_offline_without_a_mirror_names_the_repo_and_the_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # datasets and huggingface_hub read those variables once, at import: set what they read
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    # an empty cache, so that nothing cached earlier can answer
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    for name, repo in (("sst2", "nyu-mll/glue"), ("squad", "rajpurkar/squad")):
        with pytest.raises(UsageError) as excinfo:
            load_task_data(load_task(name), max_train=5, max_eval=5, seed=0)
        message = str(excinfo.value)
        assert repo in message
        assert DATA_DIR_ENV in message
        assert "Hugging Face Hub" in message


def test_a_hub_error_stops_the_run_instead_of_falling_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQuAD's spec allows a fallback for a missing train split; a network error is not a missing split."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    validation = datasets.Dataset.from_parquet(str(MIRROR / "rajpurkar/squad/plain_text/validation.parquet"))

    def load_dataset(repo_id: str, config: str, split: str) -> datasets.Dataset:
        if split == "validation":
            return validation
        raise ConnectionError("Couldn't reach 'rajpurkar/squad' on the Hub (ReadTimeout)")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(UsageError, match="could not load rajpurkar/squad/plain_text split 'train'.*ConnectionError"):
        load_task_data(load_task("squad"), max_train=5, max_eval=5, seed=0)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"files": 3}'])
def test_an_unreadable_manifest_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str) -> None:
    hub = tmp_path / "hub"
    folder = hub / "nyu-mll" / "glue" / "rte"
    folder.mkdir(parents=True)
    for split in ("train", "validation"):
        (folder / f"{split}.parquet").symlink_to(MIRROR / "nyu-mll/glue/rte" / f"{split}.parquet")
    (tmp_path / "MANIFEST.json").write_text(content)
    monkeypatch.setenv(DATA_DIR_ENV, str(hub))
    with pytest.raises(UsageError, match="MANIFEST.json (is unreadable|is not a mirror manifest)"):
        load_task_data(load_task("rte"), max_train=5, max_eval=5, seed=0)


@pytest.mark.parametrize("kind", ["file", "absent"])
def test_data_dir_that_is_not_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    target = tmp_path / "mirror.txt"
    if kind == "file":
        target.write_text("not a folder")
    monkeypatch.setenv(DATA_DIR_ENV, str(target))
    with pytest.raises(UsageError) as excinfo:
        load_task_data(load_task("sst2"), max_train=5, max_eval=5, seed=0)
    assert str(excinfo.value).startswith(f"{DATA_DIR_ENV}={target} is not a directory")
