"""One conformance test for every registered compressor, built-in or installed.

The registry is read at collection time, so installing a plugin adds it here with no change
to this file. Each compressor runs once through the real runner (``benchsuite run`` on the
smoke preset and the tiny model) on one task of each kind it supports; the other checks use
the class API.
"""

import copy
import functools
import json
import re
from dataclasses import replace

import pytest
import torch

from benchsuite.cli import main
from benchsuite.compressors.base import NEED_NAMES, CompressionContext
from benchsuite.compressors.registry import get_compressor_class, registered
from benchsuite.data import load_task_data
from benchsuite.distillation.teacher import TeacherOutputs, teacher_outputs
from benchsuite.engine import model_inputs
from benchsuite.models import load_model, load_tokenizer, resolve_model
from benchsuite.presets import get_preset
from benchsuite.runner import CALIBRATION_EXAMPLES
from benchsuite.tasks import KIND_CLASSES, load_task, task_kind

COMPRESSORS = sorted(registered())
TASK_OF_KIND = {"classification": "sst2", "extractive_qa": "squad", "token_classification": "conll2003"}
SEED = 42


def supports(cls, kind: str) -> bool:
    return cls.supported_kinds is None or kind in cls.supported_kinds


@pytest.fixture(scope="session")
def _runs() -> dict:
    return {}


@pytest.fixture()
def records_of(tiny_model, data_env, shared_cache, tmp_path_factory, _runs):
    """name -> (exit code, {task: record}): one smoke run of the compressor on the kinds it supports."""

    def records(name: str) -> tuple[int, dict[str, dict]]:
        if name not in _runs:
            cls = get_compressor_class(name)
            tasks = [task for kind, task in TASK_OF_KIND.items() if supports(cls, kind)]
            results = tmp_path_factory.mktemp(f"results-{name}")
            threads = torch.get_num_threads()
            try:  # one thread: these records are checked, not timed, and a busy machine slows threads down a lot
                code = main(["run", "--preset", "smoke", "--model", str(tiny_model), "--tasks", ",".join(tasks),
                             "--compressors", name, "--results-dir", str(results), "--cache-dir", str(shared_cache),
                             "--seed", str(SEED), "--threads", "1"])
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


@pytest.mark.parametrize("kind", sorted(TASK_OF_KIND))
@pytest.mark.parametrize("name", COMPRESSORS)
def test_compressed_model_still_evaluates(name, kind, records_of):
    record = ok_record(records_of, name, kind)
    assert record["scores"] and record["primary_score"] == record["scores"][record["task"]["primary_metric"]]


@pytest.mark.parametrize("kind", sorted(TASK_OF_KIND))
@pytest.mark.parametrize("name", COMPRESSORS)
def test_compressed_model_is_not_larger(name, kind, records_of):
    measurements = ok_record(records_of, name, kind)["measurements"]
    assert measurements["footprint"]["params"] <= measurements["footprint_before"]["params"]


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


@pytest.mark.parametrize("name", COMPRESSORS)
def test_deterministic_for_a_seed(name, tiny_model, data_env, tmp_path):
    cls = get_compressor_class(name)
    kind_name = next(kind for kind in sorted(TASK_OF_KIND) if supports(cls, kind))
    spec = load_task(TASK_OF_KIND[kind_name])
    kind = task_kind(spec, load_tokenizer(resolve_model(str(tiny_model)), max_length=spec.max_length))
    torch.manual_seed(SEED)
    model = load_model(kind.auto_class, str(tiny_model), **kind.model_kwargs())

    @functools.cache
    def train_data() -> list[dict]:  # read only if the compressor asks for it
        budget = get_preset("smoke").budget(spec.name)
        data = load_task_data(spec, max_train=budget.max_train, max_eval=budget.max_eval, seed=SEED)
        return kind.train_features(data.train)

    def outputs() -> TeacherOutputs:
        return teacher_outputs(lambda: model, train_data(), names=kind.outputs, per_token=kind.per_token,
                               pad_token_id=kind.tokenizer.pad_token_id, cache_dir=tmp_path, teacher_key="tiny")

    def compressed() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        providers = {"train_data": train_data, "teacher": lambda: copy.deepcopy(model), "teacher_outputs": outputs,
                     "calibration_data": lambda: [model_inputs(f) for f in train_data()[:CALIBRATION_EXAMPLES]]}
        context = CompressionContext(needs=cls.NEEDS, task=spec, tokenizer=kind.tokenizer, seed=SEED,
                                     providers=providers,
                                     train_config=replace(spec.train, epochs=get_preset("smoke").default.epochs))
        torch.manual_seed(SEED)  # as the runner does before each cell
        result = cls().compress(copy.deepcopy(model), context=context)
        # The model is returned too, to stay alive: torch.ao's packed embeddings unpack into tensors that
        # alias the module's buffers, so a state dict outliving its module reads freed memory.
        return result, result.state_dict()

    (model_a, first), (model_b, second) = compressed(), compressed()
    assert model_a is not model_b
    assert list(first) == list(second)
    assert [key for key in first if not same(first[key], second[key])] == [], name


def same(a, b) -> bool:
    """Equal state-dict values, quantized tensors and packed-parameter tuples included."""
    if isinstance(a, torch.Tensor):
        if a.is_quantized:
            return b.is_quantized and a.dtype == b.dtype and torch.equal(a.dequantize(), b.dequantize())
        return torch.equal(a, b)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return a == b
