"""One conformance test for every registered compressor, built-in or installed.

The registry is read at collection time, so installing a plugin adds it here with no change
to this file. Each compressor runs once through the real runner (``benchsuite run`` on the
smoke preset and the tiny model) on one task of each kind it supports; the other checks use
the class API, through the plain functions of ``tests/conformance_checks.py``: each compressor's
model is compressed once per session (on the first task kind it supports, from the tiny model as
the runner builds a cell) and that one model is reloaded, measured on disk and compared with a
second compress for determinism. ``tests/test_conformance_teeth.py`` shows each of those checks
failing on a deliberately broken compressor.
"""

import json
import re

import pytest
import torch

from benchsuite.cli import main
from benchsuite.compressors.base import NEED_NAMES, CompressionContext
from benchsuite.compressors.registry import get_compressor_class, registered
from benchsuite.tasks import KIND_CLASSES
from tests import conformance_checks as checks
from tests.conformance_checks import SEED, supports
from tests.plugins import PLUGINS

# Under pytest-xdist (--dist loadgroup) every test of one compressor runs on one worker, so its session
# caches (one smoke run, one compressed model) are built once.
COMPRESSORS = [pytest.param(name, marks=pytest.mark.xdist_group(f"conformance-{name}"), id=name)
               for name in sorted(registered())]
TASK_OF_KIND = {"classification": "sst2", "extractive_qa": "squad", "token_classification": "conll2003"}


@pytest.fixture(scope="session")
def _runs() -> dict:
    return {}


@pytest.fixture()
def records_of(tiny_model, data_env, shared_cache, tmp_path_factory, _runs):
    """name -> (exit code, {task: record}): one smoke run of the compressor on the kinds it supports."""

    def records(name: str) -> tuple[int, dict[str, dict]]:
        if name not in _runs:
            cls = get_compressor_class(name)
            checks.skip_unavailable(cls)
            tasks = [task for kind, task in TASK_OF_KIND.items() if supports(cls, kind)]
            results = tmp_path_factory.mktemp(f"results-{name}")
            threads = torch.get_num_threads()
            try:  # one thread: these records are checked, not timed, and a busy machine slows threads down a lot
                code = main(["run", "--preset", "smoke", "--model", str(tiny_model), "--tasks", ",".join(tasks),
                             "--compressors", checks.spec_of(cls), "--results-dir", str(results),
                             "--cache-dir", str(shared_cache), "--seed", str(SEED), "--threads", "1"])
            finally:
                torch.set_num_threads(threads)
            found = (json.loads(p.read_text()) for p in results.rglob("*.json"))
            _runs[name] = code, {r["task"]["name"]: r for r in found}
        return _runs[name]

    return records


def ok_record(records_of, name: str, kind: str) -> dict:
    if not supports(get_compressor_class(name), kind):
        pytest.skip(f"{name} does not support {kind} tasks")
    code, records = records_of(name)
    task = TASK_OF_KIND[kind]
    assert task in records, f"benchsuite run --compressors {name} exited {code} and wrote no {task} record"
    record = records[task]
    assert record["status"] == "ok", (record["error"] or {}).get("traceback")
    return record


def test_every_task_kind_has_a_task_here():
    assert set(TASK_OF_KIND) == set(KIND_CLASSES)


@pytest.mark.parametrize("name", COMPRESSORS)
def test_config_round_trips_through_json_and_hashes_stably(name):
    cls = get_compressor_class(name)
    config = cls().config
    data = json.loads(json.dumps(config.to_json()))
    assert data["type"] == cls.config_class.__name__ and data["version"] == cls.config_class.version
    assert cls.config_class.from_params(data["params"]) == config
    assert re.fullmatch(r"[0-9a-f]{12}", config.config_hash())
    assert cls().config.config_hash() == config.config_hash()


@pytest.mark.parametrize("name", COMPRESSORS)
def test_search_space_is_valid(name):
    # what `benchsuite optimise` may try: known options, each value a valid config in the field's own type
    checks.check_search_space(get_compressor_class(name))


@pytest.mark.parametrize("kind", sorted(TASK_OF_KIND))
@pytest.mark.parametrize("name", COMPRESSORS)
def test_compressed_model_still_evaluates(name, kind, records_of):
    record = ok_record(records_of, name, kind)
    assert record["scores"] and record["primary_score"] == record["scores"][record["task"]["primary_metric"]]


@pytest.mark.parametrize("name", COMPRESSORS)
def test_only_declared_needs_are_reachable(name):
    cls = get_compressor_class(name)
    assert cls.NEEDS <= NEED_NAMES
    context = CompressionContext(needs=cls.NEEDS, task=None, tokenizer=None, seed=SEED,
                                 providers={need: need for need in NEED_NAMES})
    for need in sorted(NEED_NAMES):
        if need in cls.NEEDS:
            assert getattr(context, need) == need
        else:
            with pytest.raises(PermissionError, match=need):
                getattr(context, need)


@pytest.fixture(scope="session")
def _compressed() -> dict:
    return {}


@pytest.fixture()
def compressed_of(tiny_model, data_env, tmp_path_factory, _compressed):
    """name -> (setup, compressed): the compressor's model, compressed once per session on the first task kind
    it supports (classification for most), with the in-memory model's outputs on the setup's fixed batch.
    A compressor whose optional dependency is missing is skipped (UsageError at construction)."""

    def get(name: str) -> tuple[checks.Setup, checks.Compressed]:
        cls = get_compressor_class(name)
        kind = next((kind for kind in sorted(TASK_OF_KIND) if supports(cls, kind)), None)
        if kind is None:
            pytest.skip(f"{name} supports none of {sorted(TASK_OF_KIND)}")
        if ("setup", kind) not in _compressed:
            _compressed["setup", kind] = checks.make_setup(tiny_model, kind, TASK_OF_KIND[kind],
                                                           tmp_path_factory.mktemp("teacher-outputs"))
        setup = _compressed["setup", kind]
        if name not in _compressed:
            try:
                _compressed[name] = checks.compress(cls, setup)
            except (Exception, pytest.skip.Exception) as exc:  # a skip or a failure, once, for all three checks
                _compressed[name] = exc
        found = _compressed[name]
        if isinstance(found, BaseException):
            raise found
        return setup, found

    return get


@pytest.fixture()
def baseline_bytes(tmp_path_factory, _compressed):
    """kind setup -> bytes of its fp32 source model as the ``baseline`` compressor saves it (once per kind)."""

    def get(setup: checks.Setup) -> int:
        if ("baseline bytes", setup.kind_name) not in _compressed:
            _compressed["baseline bytes", setup.kind_name] = checks.baseline_size(
                setup, tmp_path_factory.mktemp(f"baseline-{setup.kind_name}") / "model")
        return _compressed["baseline bytes", setup.kind_name]

    return get


def test_broken_test_plugins_are_not_in_the_conformance_parametrization():
    # tests/plugins.py holds deliberately broken compressors, registered for single tests only
    assert not set(PLUGINS) & set(registered())


@pytest.mark.parametrize("name", COMPRESSORS)
def test_reloaded_model_predicts_what_the_scored_model_did(name, compressed_of, tmp_path):
    # Scores come from the in-memory model, memory is measured on the saved file reloaded by Compressor.load.
    setup, compressed = compressed_of(name)
    checks.check_reload(compressed, setup, tmp_path / "model")


@pytest.mark.parametrize("name", COMPRESSORS)
def test_saved_model_is_not_larger_than_the_fp32_baseline(name, compressed_of, baseline_bytes, tmp_path):
    # Measured on the tiny model, every built-in is at most the baseline's size: equal for baseline, magnitude
    # (dense zeros) and zero_small, 0.99x for distill, cross_layer, heads, ffn and low_rank (the 30522 x 32 word
    # embedding is 96% of the tiny model, and they leave it whole), 0.17x..0.5x for the rest.
    setup, compressed = compressed_of(name)
    checks.check_not_larger_on_disk(compressed, baseline_bytes(setup), tmp_path / "model")


@pytest.mark.parametrize("name", COMPRESSORS)
def test_compress_keeps_no_state_on_the_instance(name, compressed_of):
    _, compressed = compressed_of(name)
    checks.check_stateless(compressed)


@pytest.mark.parametrize("name", COMPRESSORS)
def test_deterministic_for_a_seed(name, compressed_of):
    setup, compressed = compressed_of(name)
    checks.check_deterministic(get_compressor_class(name), setup, compressed)
