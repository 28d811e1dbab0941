"""benchsuite.tasks.spec: the task YAML files parse into validated TaskSpecs, and bad ones fail clearly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchsuite.errors import UsageError
from benchsuite.tasks import load_task, task_files
from benchsuite.tasks.spec import KINDS, TaskSpec, tasks_dir

GLUE_DIR = tasks_dir() / "glue"
SQUAD_FILE = tasks_dir() / "squad" / "v1.yaml"

# A complete GLUE-like task in one file, no include: every key written out.
STANDALONE = """\
name: boolq_like
kind: classification
version: 2
description: >
  A yes/no question task,
  written without Python.
dataset:
  repo_id: someone/boolq
  config: default
  train_split: train
  eval_split: validation
columns: {text: [question, passage], label: answer}
labels: ["no", "yes"]
metrics: [accuracy, f1]
primary_metric: f1
max_length: 96
train: {learning_rate: 3.0e-5, epochs: 2, batch_size: 16}
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _glue_like(tmp_path: Path, body: str, name: str = "new.yaml") -> Path:
    """A task file including a copy of the real _glue.yaml, as a new GLUE task would."""
    shutil.copy(GLUE_DIR / "_glue.yaml", tmp_path / "_glue.yaml")
    return _write(tmp_path, name, "include: _glue.yaml\n" + body)


VALID_BODY = """\
dataset: {config: sst2}
columns: {text: [sentence]}
labels: [negative, positive]
metrics: [accuracy]
primary_metric: accuracy
"""


# --- the shipped task files -----------------------------------------------------------------------


def test_task_files_lists_every_task_and_skips_bases() -> None:
    files = task_files()
    assert sorted(files) == sorted([
        "cola", "mnli", "mnli_mismatched", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "wnli",
        "conll2003", "squad"])
    assert all(not path.name.startswith("_") for path in files.values())
    assert files["squad"] == SQUAD_FILE  # named by its `name:` key, not its file stem "v1"


@pytest.mark.parametrize("name", sorted(task_files()))
def test_every_task_file_loads(name: str) -> None:
    spec = load_task(name)
    assert isinstance(spec, TaskSpec)
    assert spec.name == name
    assert spec.kind in KINDS
    assert spec.source == str(task_files()[name])
    assert 8 <= spec.max_length <= 4096
    assert spec.metrics and spec.primary_metric
    assert spec.train.learning_rate > 0 and spec.train.epochs > 0
    assert len(spec.digest()) == 16
    assert load_task(str(task_files()[name])) == spec  # by path, the same spec


def test_glue_task_inherits_the_base_and_overrides_nested_keys() -> None:
    sst2 = load_task("sst2")
    # from _glue.yaml
    assert sst2.kind == "classification" and sst2.version == 1 and sst2.max_length == 128
    assert (sst2.dataset.repo_id, sst2.dataset.train_split, sst2.dataset.eval_split) == (
        "nyu-mll/glue", "train", "validation")
    assert sst2.train.learning_rate == 5.0e-5 and sst2.train.batch_size == 32
    # from sst2.yaml: config merged into the dataset mapping, the text list replaced (not appended)
    assert sst2.dataset.config == "sst2"
    assert sst2.columns == {"text": ["sentence"], "label": "label"}
    assert sst2.train.epochs == 2
    assert sst2.labels == ("negative", "positive")
    # mrpc keeps the base's two text columns
    assert load_task("mrpc").columns == {"text": ["sentence1", "sentence2"], "label": "label"}


def test_mnli_mismatched_inherits_from_mnli_and_glue() -> None:
    mnli, mm = load_task("mnli"), load_task("mnli_mismatched")
    assert mm.name == "mnli_mismatched"
    assert mm.dataset.eval_split == "validation_mismatched"  # its own override
    assert mnli.dataset.eval_split == "validation_matched"
    assert mm.dataset.config == "mnli" and mm.labels == ("entailment", "neutral", "contradiction")  # from mnli
    assert mm.columns == {"text": ["premise", "hypothesis"], "label": "label"}  # mnli over _glue
    assert mm.train.epochs == 1 and mm.train.learning_rate == 5.0e-5 and mm.max_length == 128  # mnli, _glue
    assert mm.dataset.repo_id == "nyu-mll/glue" and mm.dataset.train_split == "train"  # _glue
    assert mm.description.startswith("Multi-Genre NLI, mismatched")
    assert mm.digest() != mnli.digest()


def test_stsb_is_a_regression_and_squad_reads_its_params() -> None:
    stsb = load_task("stsb")
    assert stsb.labels is None and stsb.is_regression
    assert not load_task("sst2").is_regression
    squad = load_task("squad")
    assert squad.params == {"doc_stride": 96, "n_best": 20, "max_answer_length": 30}
    assert squad.dataset.train_fallback is None
    assert squad.dataset.train_from_eval == {"fraction": 0.5, "dev_fraction": 0.05, "group_by": "title"}
    assert squad.metrics == ("squad",) and squad.primary_metric == "f1"


@pytest.mark.parametrize("how", [{"fraction": 1.2}, {"fraction": 0.5, "dev_fraction": 0.5}, {"fracton": 0.5},
                                 {"fraction": 0.5, "dev_fraction": -0.1}, "half"])
def test_train_from_eval_refuses_what_leaves_nothing_to_evaluate(how) -> None:
    from benchsuite.tasks.spec import DatasetSpec

    with pytest.raises(ValueError, match="train_from_eval"):
        DatasetSpec(repo_id="r", config="c", train_split="train", eval_split="validation", train_from_eval=how)
    with pytest.raises(ValueError, match="exclude each other"):
        DatasetSpec(repo_id="r", config="c", train_split="train", eval_split="validation",
                    train_fallback={"fraction": 0.5}, train_from_eval={"fraction": 0.5})


# --- new tasks as YAML only -----------------------------------------------------------------------


def test_new_glue_like_task_loads_by_path_with_an_include(tmp_path: Path) -> None:
    path = _glue_like(tmp_path, "dataset: {config: rte2}\nlabels: [entailment, not_entailment]\n"
                      "metrics: [accuracy, f1]\n"
                      "primary_metric: f1\ntrain: {epochs: 5}\n", name="rte2.yaml")
    spec = load_task(str(path))
    assert spec.name == "rte2"  # the file's stem
    assert spec.dataset.config == "rte2" and spec.dataset.repo_id == "nyu-mll/glue"
    assert spec.labels == ("entailment", "not_entailment")
    assert spec.metrics == ("accuracy", "f1") and spec.primary_metric == "f1"
    assert spec.train.epochs == 5 and spec.train.batch_size == 32
    assert spec.source == str(path)
    # and by name from a task folder holding it; the _glue.yaml base is no task
    assert sorted(task_files(tmp_path)) == ["rte2"]
    assert load_task("rte2", root=tmp_path) == spec


def test_new_standalone_task_loads_by_path(tmp_path: Path) -> None:
    spec = load_task(str(_write(tmp_path, "whatever.yaml", STANDALONE)))
    assert spec.name == "boolq_like"
    assert spec.version == 2
    assert spec.dataset.repo_id == "someone/boolq" and spec.dataset.train_fallback is None
    assert spec.columns == {"text": ["question", "passage"], "label": "answer"}
    assert spec.labels == ("no", "yes")
    assert spec.max_length == 96
    assert (spec.train.learning_rate, spec.train.epochs, spec.train.batch_size) == (3.0e-5, 2, 16)
    assert spec.train.warmup_ratio == 0.1  # default
    assert spec.description == "A yes/no question task, written without Python."


def test_a_task_including_a_named_base_gets_its_own_name(tmp_path: Path) -> None:
    shutil.copy(SQUAD_FILE, tmp_path / "v1.yaml")
    _write(tmp_path, "squad_short.yaml", "include: v1.yaml\nmax_length: 128\nparams: {doc_stride: 32}\n")
    files = task_files(tmp_path)
    assert sorted(files) == ["squad", "squad_short"]
    short = load_task("squad_short", root=tmp_path)
    assert short.name == "squad_short"  # not "squad", whose results it would overwrite
    assert short.max_length == 128
    assert short.params == {"doc_stride": 32, "n_best": 20, "max_answer_length": 30}
    assert load_task("squad", root=tmp_path).name == "squad"


def test_learning_rate_written_without_a_dot_is_a_number(tmp_path: Path) -> None:
    # YAML 1.1 reads 5e-5 as the string "5e-5"
    spec = load_task(str(_glue_like(tmp_path, VALID_BODY + "train: {learning_rate: 5e-5}\n")))
    assert spec.train.learning_rate == 5e-5 and isinstance(spec.train.learning_rate, float)


# --- errors ---------------------------------------------------------------------------------------


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "broken.yaml", "kind: classification\nversion: 1\nmetrics: [accuracy\n"
                  "primary_metric: accuracy\n")
    with pytest.raises(UsageError) as excinfo:
        load_task(str(path))
    message = str(excinfo.value)
    assert "broken.yaml:4:" in message  # the flow sequence opened on line 3 hits a ':' on line 4
    assert "malformed YAML" in message


def test_malformed_indentation_names_its_line(tmp_path: Path) -> None:
    path = _glue_like(tmp_path, VALID_BODY + "train:\n  epochs: 2\n    batch_size: 8\n", name="indent.yaml")
    # line 1 include, 2-6 body, 7 "train:", 8 "  epochs: 2", 9 "    batch_size: 8" whose ':' is column 15
    with pytest.raises(UsageError, match=r"indent\.yaml:9:15: malformed YAML"):
        load_task(str(path))


def test_malformed_base_is_named_not_the_including_file(tmp_path: Path) -> None:
    _write(tmp_path, "_base.yaml", "kind: classification\n  version: 1\n")
    path = _write(tmp_path, "child.yaml", "include: _base.yaml\n" + VALID_BODY)
    with pytest.raises(UsageError, match=r"_base\.yaml:2:"):
        load_task(str(path))


def test_task_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"list\.yaml: a task file must be a YAML mapping, got list"):
        load_task(str(_write(tmp_path, "list.yaml", "- kind: classification\n")))


def test_unknown_metric_suggests_the_closest(tmp_path: Path) -> None:
    path = _glue_like(tmp_path, VALID_BODY.replace("metrics: [accuracy]", "metrics: [acuracy]"))
    with pytest.raises(UsageError) as excinfo:
        load_task(str(path))
    message = str(excinfo.value)
    assert "unknown metric 'acuracy'" in message
    assert "did you mean accuracy?" in message
    assert str(path) in message


def test_unknown_task_name_suggests_the_closest() -> None:
    with pytest.raises(UsageError, match=r"unknown task 'sst'; did you mean sst2"):
        load_task("sst")


def test_unknown_kind_suggests_the_closest(tmp_path: Path) -> None:
    path = _glue_like(tmp_path, VALID_BODY + "kind: clasification\n")
    with pytest.raises(UsageError, match=r"unknown kind 'clasification'; did you mean classification"):
        load_task(str(path))


@pytest.mark.parametrize(("metrics", "primary"), [
    ("[accuracy]", "f1"),
    ("[squad]", "squad"),  # squad reports exact_match and f1, not "squad"
    ("[seqeval]", "seqeval"),
    ("[pearson, spearmanr]", "accuracy"),
])
def test_primary_metric_must_be_a_score_of_the_metrics(tmp_path: Path, metrics: str, primary: str) -> None:
    body = VALID_BODY.replace("metrics: [accuracy]", f"metrics: {metrics}").replace(
        "primary_metric: accuracy", f"primary_metric: {primary}")
    with pytest.raises(UsageError, match=rf"primary_metric '{primary}' is not a score of metrics"):
        load_task(str(_glue_like(tmp_path, body)))


@pytest.mark.parametrize(("metrics", "primary"), [
    ("[squad]", "exact_match"), ("[seqeval]", "recall"), ("[accuracy, f1]", "f1")])
def test_primary_metric_may_be_any_score_of_the_metrics(tmp_path: Path, metrics: str, primary: str) -> None:
    body = VALID_BODY.replace("metrics: [accuracy]", f"metrics: {metrics}").replace(
        "primary_metric: accuracy", f"primary_metric: {primary}")
    assert load_task(str(_glue_like(tmp_path, body))).primary_metric == primary


@pytest.mark.parametrize(("train", "field", "why"), [
    ("{learning_rate: -1.0e-5}", "train.learning_rate", "must be > 0, got -1e-05"),
    ("{learning_rate: 0}", "train.learning_rate", "must be > 0, got 0"),
    ("{epochs: 0}", "train.epochs", "must be > 0, got 0"),
    ("{batch_size: 0}", "train.batch_size", "must be >= 1, got 0"),
    ("{warmup_ratio: 1.0}", "train.warmup_ratio", "must be in [0, 1), got 1.0"),
    ("{learning_rate: fast}", "train.learning_rate", "must be a number, got 'fast'"),
    ("{epochs: [1, 2]}", "train.epochs", "must be a number, got [1, 2]"),
])
def test_invalid_train_values_are_rejected_naming_the_field(
        tmp_path: Path, train: str, field: str, why: str) -> None:
    path = _glue_like(tmp_path, VALID_BODY + f"train: {train}\n")
    with pytest.raises(UsageError) as excinfo:
        load_task(str(path))
    message = str(excinfo.value)
    assert f"{field} {why}" in message
    assert str(path) in message


@pytest.mark.parametrize(("extra", "named"), [
    ("metric: [f1]\n", "unknown keys ['metric']"),
    ("dataset: {confg: x}\n", "confg"),
    ("train: {lr: 0.1}\n", "unknown train keys ['lr']"),
])
def test_unknown_keys_are_rejected(tmp_path: Path, extra: str, named: str) -> None:
    with pytest.raises(UsageError, match=r"invalid task spec") as excinfo:
        load_task(str(_glue_like(tmp_path, VALID_BODY + extra)))
    assert named in str(excinfo.value)


@pytest.mark.parametrize("key", ["kind", "version", "metrics", "primary_metric", "max_length"])
def test_missing_required_key(tmp_path: Path, key: str) -> None:
    lines = [line for line in STANDALONE.splitlines(keepends=True) if not line.startswith(f"{key}:")]
    with pytest.raises(UsageError, match=rf"missing required key '{key}'"):
        load_task(str(_write(tmp_path, "t.yaml", "".join(lines))))


def test_classification_without_labels_is_refused_not_made_a_regression(tmp_path: Path) -> None:
    body = VALID_BODY.replace("labels: [negative, positive]\n", "")
    with pytest.raises(UsageError, match=r"missing required key 'labels'.*labels: null"):
        load_task(str(_glue_like(tmp_path, body)))
    # an explicit null is a regression
    spec = load_task(str(_glue_like(tmp_path, body + "labels: null\n", name="reg.yaml")))
    assert spec.labels is None and spec.is_regression


def test_token_classification_needs_labels(tmp_path: Path) -> None:
    text = (tasks_dir() / "ner" / "conll2003.yaml").read_text()
    assert "labels: [O, B-PER" in text
    text = "\n".join(line for line in text.splitlines() if not line.startswith("labels:")) + "\nlabels: null\n"
    with pytest.raises(UsageError, match=r"token_classification task needs 'labels'"):
        load_task(str(_write(tmp_path, "ner.yaml", text)))


@pytest.mark.parametrize(("value", "ok"), [(7, False), (8, True), (4096, True), (4097, False)])
def test_max_length_bounds(tmp_path: Path, value: int, ok: bool) -> None:
    path = _glue_like(tmp_path, VALID_BODY + f"max_length: {value}\n")
    if ok:
        assert load_task(str(path)).max_length == value
    else:
        with pytest.raises(UsageError, match=rf"max_length must be between 8 and 4096, got {value}"):
            load_task(str(path))


def test_missing_include_and_include_cycles(tmp_path: Path) -> None:
    path = _write(tmp_path, "orphan.yaml", "include: _nowhere.yaml\n" + VALID_BODY)
    with pytest.raises(UsageError, match=r"include '_nowhere.yaml' not found"):
        load_task(str(path))
    _write(tmp_path, "a.yaml", "include: b.yaml\n")
    _write(tmp_path, "b.yaml", "include: a.yaml\n")
    with pytest.raises(UsageError, match=r"include cycle"):
        load_task(str(tmp_path / "a.yaml"))
    # the same cycle spelled through the parent folder
    sub = tmp_path / "sub"
    sub.mkdir()
    _write(sub, "c.yaml", "include: ../sub/d.yaml\n")
    _write(sub, "d.yaml", "include: ../sub/c.yaml\n")
    with pytest.raises(UsageError, match=r"include cycle"):
        load_task(str(sub / "c.yaml"))


def test_missing_task_file_and_duplicate_names(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"task file .*nope\.yaml does not exist"):
        load_task(str(tmp_path / "nope.yaml"))
    _write(tmp_path, "one.yaml", STANDALONE)
    _write(tmp_path, "two.yaml", STANDALONE)
    with pytest.raises(UsageError, match=r"task name 'boolq_like' is defined twice"):
        task_files(tmp_path)
    with pytest.raises(UsageError, match=r"does not exist"):
        task_files(tmp_path / "absent")


def test_tasks_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "solo.yaml", STANDALONE)
    monkeypatch.setenv("BENCHSUITE_TASKS_DIR", str(tmp_path))
    assert tasks_dir() == tmp_path
    assert load_task("boolq_like").source == str(tmp_path / "solo.yaml")


# --- task files as data: includes by name, anchors, groups -------------------------------------------


def test_a_task_outside_the_task_folder_includes_a_built_in_base_by_name(tmp_path: Path) -> None:
    path = _write(tmp_path, "my_sst2.yaml", "include: glue/_glue.yaml\n" + VALID_BODY + "anchor: 'none yet'\n")
    spec = load_task(str(path))
    assert spec.dataset.repo_id == "nyu-mll/glue" and spec.train.batch_size == 32  # from the built-in base
    assert spec.anchor == "none yet" and spec.groups == ("full",)
    # a file beside the including one comes first
    (tmp_path / "glue").mkdir()
    _write(tmp_path / "glue", "_glue.yaml", "kind: classification\nversion: 1\nmax_length: 64\n"
           "dataset: {repo_id: local/glue, train_split: train, eval_split: validation}\n"
           "columns: {text: [sentence], label: label}\n")
    assert load_task(str(path)).dataset.repo_id == "local/glue"


def test_anchor_and_groups_do_not_change_the_digest(tmp_path: Path) -> None:
    plain = load_task(str(_glue_like(tmp_path, VALID_BODY, name="a.yaml")))
    marked = load_task(str(_glue_like(tmp_path, VALID_BODY + "anchor: '91.5 acc'\ngroups: [mine]\n", name="a.yaml")))
    assert marked.anchor == "91.5 acc" and marked.groups == ("mine",)
    assert marked.digest() == plain.digest()  # neither can change a score: no cell is recomputed for them
    assert load_task("sst2").anchor.startswith("91.5")


def test_the_full_preset_is_the_tasks_of_group_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchsuite.presets import get_preset

    assert get_preset("full").tasks == tuple(sorted(task_files()))  # every shipped task is in it
    _write(tmp_path, "in.yaml", STANDALONE.replace("name: boolq_like\n", "") + "groups: [full, extra]\n")
    _write(tmp_path, "out.yaml", STANDALONE.replace("name: boolq_like\n", ""))
    monkeypatch.setenv("BENCHSUITE_TASKS_DIR", str(tmp_path))
    assert get_preset("full").tasks == ("in",)
    _write(tmp_path, "in.yaml", STANDALONE.replace("name: boolq_like\n", "") + "groups: full\n")
    with pytest.raises(UsageError, match="groups must be a list of names"):
        get_preset("full")


def test_the_default_run_shows_the_best_int8_for_the_cpu() -> None:
    from benchsuite.presets import get_preset, showcase

    assert showcase(["avx", "avx2", "fma"]) == ("baseline", "dynamic_int8")  # 8-bit activations would saturate
    assert showcase(["avx2", "avx512f", "avx512_vnni"]) == ("baseline", "dynamic_int8:reduce_range=false")
    assert get_preset("quick").compressors == showcase() == get_preset("full").compressors
    assert get_preset("smoke").compressors == ("baseline",)
    assert get_preset("quick").limited(max_train=10, max_eval=None).compressors == showcase()


# The built-in tasks' digests, pinned: a change to the spec code or a task file that moves one re-keys every
# record of that task (its cells are recomputed and its old records become another experiment), so it must be
# made on purpose, with this table, never as a side effect (adding train_from_eval once re-keyed every task).
PINNED_DIGESTS = {"conll2003": "5f608eed1fbfa25f", "mrpc": "9ba4db2a515b6653", "sst2": "a394c0b73a0e9fe3",
                  "squad": "ed6115d3f2648fda"}


@pytest.mark.parametrize("name", sorted(PINNED_DIGESTS))
def test_built_in_task_digests_do_not_move_by_accident(name: str) -> None:
    assert load_task(name).digest() == PINNED_DIGESTS[name]


def test_an_unset_late_option_is_not_in_the_spec_json(tmp_path: Path) -> None:
    plain = load_task(str(_glue_like(tmp_path, VALID_BODY, name="a.yaml")))
    assert "train_from_eval" not in plain.to_json()["dataset"]
    body = VALID_BODY.replace("{config: sst2}", "{config: sst2, train_from_eval: {fraction: 0.5, group_by: sentence}}")
    joined = load_task(str(_glue_like(tmp_path, body, name="b.yaml")))
    assert joined.to_json()["dataset"]["train_from_eval"] == {"fraction": 0.5, "group_by": "sentence"}
    assert joined.digest() != plain.digest()
