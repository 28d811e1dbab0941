"""The conformance checks as plain functions, run over every registered compressor by
``tests/test_conformance.py`` and against deliberately broken ones by ``tests/test_conformance_teeth.py``.

A :class:`Setup` is one task kind on the tiny model: the fp32 source model (the head initialised
from the seed, as the runner does), a :class:`CompressionContext` factory built as the runner builds
it, and a fixed batch of real-shaped inputs (held-out rows of the smoke budget, padded, so the
attention mask has zeros). :func:`compress` runs a compressor once on a copy of the source model and
keeps the in-memory model's outputs on that batch: the scores of a record come from that model. The
check functions raise AssertionError with what differs.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from benchsuite.compressors.base import CompressionContext, CompressionResult, Compressor, as_result
from benchsuite.compressors.identity import Baseline
from benchsuite.compressors.registry import build_compressor
from benchsuite.data import load_task_data
from benchsuite.distillation.teacher import TeacherOutputs, teacher_outputs
from benchsuite.engine import collate, model_inputs
from benchsuite.errors import UsageError
from benchsuite.measure.footprint import saved_size
from benchsuite.models import load_model, load_tokenizer, resolve_model
from benchsuite.presets import get_preset
from benchsuite.tasks import load_task, task_kind

SEED = 42
PRESET = "smoke"
BATCH_ROWS = 8  # held-out rows in the fixed input batch

# Reload tolerance for quantised kernels (``compute`` "int8", "fp16" or "bf16"), per output tensor:
# max |reloaded - in memory| <= RELOAD_RTOL * max |in-memory output| + RELOAD_ATOL. Float models must reload
# bit for bit. Measured on the tiny model (each built-in on each task kind, 1 thread), every built-in
# reloads bit for bit, the quantised ones included (max difference 0.0: dynamic_int8, static_int8, ort_int8,
# weight_only_int8/int4, fp16, bf16), since the file holds exactly the tensors the in-memory model runs on
# and the same kernels run them. The tolerance leaves room for what may legitimately differ between a model
# built in place and one rebuilt from its file: another weight packing or graph optimisation, so another
# summation order in an fp32 accumulator, about 1e-7..1e-6 of the output scale. It stays well below the
# smallest wrong model measured here (the same outputs, each kind): the fp16 model reloaded as the fp32
# model it came from, i.e. the fp16 rounding alone, differs by 8.6e-4..9.4e-4 of the output scale on the
# token and QA heads (5e-3 on the classifier), over 8x the tolerance; fp32 weights saved in place of their
# per-row int8 rounding by 4.6e-3 and more; a whole int8 model reloaded as fp32 by 1.7e-2 and more. The
# bound is relative to the output's scale (max |output| in the batch), so it means the same for the tiny
# random model's small logits (about 0.4 here) and a fine-tuned model's larger ones.
RELOAD_RTOL = 1e-4
RELOAD_ATOL = 1e-7  # for outputs that are all (nearly) zero


def is_quantised(compressor: Compressor) -> bool:
    """Runs quantised kernels (int8, or a non-fp32 dtype), whose reload is compared within a tolerance."""
    return compressor.compute != "fp32"


def skip_unavailable(cls) -> None:
    """Skip, naming the missing package and the fix, a compressor that cannot run here."""
    import pytest  # noqa: PLC0415

    reason = cls.unavailable_reason()
    if reason is not None:
        pytest.skip(f"{cls.name} is unavailable here: it {reason}")


def supports(cls, kind: str) -> bool:
    return cls.supported_kinds is None or kind in cls.supported_kinds


def instantiate(cls) -> Compressor:
    """The compressor with its default config; skipped (not failed) when an optional dependency is missing."""
    import pytest  # noqa: PLC0415

    skip_unavailable(cls)
    try:
        return cls()
    except UsageError as exc:  # e.g. ort_int8 without onnxruntime: require_onnx() says which extra to install
        pytest.skip(f"{cls.name} cannot be built here: {exc}")


@dataclass
class Setup:
    """One task kind on the tiny model: what every check of a compressor on that kind needs."""

    kind_name: str
    spec: object
    kind: object
    model: torch.nn.Module  # the fp32 source: copied before every compress, never changed
    inputs: dict[str, torch.Tensor]  # the fixed batch
    context: Callable[[frozenset[str]], CompressionContext]  # NEEDS -> a fresh context, as the runner builds it

    def output_names(self) -> tuple[str, ...]:
        return tuple(self.kind.outputs)


def make_setup(tiny_model: Path, kind_name: str, task: str, cache_dir: Path) -> Setup:
    """The source model, the input batch and a context factory, as the runner builds them for a cell
    (the tiny model is not fine-tuned here, as in the determinism check that came before)."""
    spec = load_task(task)
    kind = task_kind(spec, load_tokenizer(resolve_model(str(tiny_model)), max_length=spec.max_length))
    torch.manual_seed(SEED)  # the new head's initialisation
    model = load_model(kind.auto_class, str(tiny_model), **kind.model_kwargs()).eval()
    budget = get_preset(PRESET).budget(spec.name)

    @functools.cache
    def data():
        return load_task_data(spec, max_train=budget.max_train, max_eval=budget.max_eval, seed=SEED)

    @functools.cache
    def train_data() -> list[dict]:
        return kind.train_features(data().train)

    def outputs() -> TeacherOutputs:
        return teacher_outputs(lambda: model, train_data(), names=kind.outputs, per_token=kind.per_token,
                               pad_token_id=kind.tokenizer.pad_token_id, cache_dir=cache_dir, teacher_key="tiny")

    def pretrained() -> torch.nn.Module:  # the tiny model is its own pretrained source here, with a fresh head
        torch.manual_seed(SEED)
        return load_model(kind.auto_class, str(tiny_model), **kind.model_kwargs())

    def context(needs: frozenset[str]) -> CompressionContext:
        # as the runner provides them: calibration data is every training feature, unlabelled
        providers = {"train_data": train_data, "task_rows": lambda: data().train,
                     "teacher": lambda: copy.deepcopy(model), "teacher_outputs": outputs,
                     "calibration_data": lambda: [model_inputs(f) for f in train_data()],
                     "pretrained": pretrained}
        return CompressionContext(needs=needs, task=spec, tokenizer=kind.tokenizer, seed=SEED, providers=providers,
                                  train_config=replace(spec.train, epochs=get_preset(PRESET).default.epochs))

    held_out = kind.train_features(data().eval)[:BATCH_ROWS]  # real rows, real lengths, labels dropped
    inputs = collate([model_inputs(f) for f in held_out], kind.tokenizer.pad_token_id)
    assert (inputs["attention_mask"] == 0).any(), "the fixed batch should have padding, to exercise the mask"
    return Setup(kind_name, spec, kind, model, inputs, context)


@torch.inference_mode()
def predict(model: torch.nn.Module, setup: Setup) -> dict[str, torch.Tensor]:
    """Every output the task reads (logits, or start_logits and end_logits), in float32, as the evaluation
    reads them (``engine.forward_all``: eval mode, inference mode, ``.float()``)."""
    model.eval()
    result = model(**{k: v.clone() for k, v in setup.inputs.items()})
    return {name: getattr(result, name).float().clone() for name in setup.output_names()}


@dataclass
class Compressed:
    compressor: Compressor
    result: CompressionResult  # what compress returned (a bare model wrapped, as the runner wraps it)
    outputs: dict[str, torch.Tensor]  # the in-memory model's, on the setup's batch
    left_state: list[str]  # attributes of the compressor instance that compress added, removed or rebound

    @property
    def model(self) -> torch.nn.Module:
        return self.result.model


def compress(cls, setup: Setup) -> Compressed:
    """One ``compress`` of a copy of the source model, seeded as the runner seeds a cell."""
    compressor = instantiate(cls)
    source = prepared(cls, setup)
    before = dict(vars(compressor))
    torch.manual_seed(SEED)  # as the runner does before each cell
    result = as_result(compressor.compress(source, context=setup.context(cls.NEEDS)), compressor)
    after = vars(compressor)
    left = sorted(k for k in before.keys() | after.keys()
                  if k not in before or k not in after or after[k] is not before[k])
    return Compressed(compressor, result, predict(result.model, setup), left)


def spec_of(cls) -> str:
    """What ``--compressors`` runs for a conformance record: the compressor, after the stages it ``follows``."""
    return f"{cls.follows}+{cls.name}" if cls.follows else cls.name


def prepared(cls, setup: Setup) -> torch.nn.Module:
    """A copy of the source model, put through the stages ``cls`` follows (seeded as a pipeline seeds them)."""
    model = copy.deepcopy(setup.model)
    if cls.follows:
        prefix = build_compressor(cls.follows)
        torch.manual_seed(SEED)
        model = as_result(prefix.compress(model, context=setup.context(prefix.NEEDS)), prefix).model
    return model


def check_stateless(compressed: Compressed) -> None:
    """compress leaves nothing on the compressor instance, which serves every task of a run (and a pipeline's
    stages): what it learnt goes back in the CompressionResult."""
    assert not compressed.left_state, (
        f"{compressed.compressor.name}: compress left state on the compressor instance "
        f"({', '.join(compressed.left_state)}); return the layout and recovery in the CompressionResult")


def identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit equal values (NaN where the other has NaN counts as equal)."""
    if a.shape != b.shape or a.dtype != b.dtype or not torch.equal(a.isnan(), b.isnan()):
        return False
    return torch.equal(a[~a.isnan()], b[~b.isnan()])


def max_differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per output, max |a - b| (inf where the shapes differ or a value is not finite in one only)."""
    assert list(a) == list(b), f"outputs {list(a)} vs {list(b)}"
    found = {}
    for name in a:
        x, y = a[name], b[name]
        if x.shape != y.shape:
            found[name] = float("inf")
        elif not torch.equal(torch.isfinite(x), torch.isfinite(y)):
            found[name] = float("inf")
        else:
            finite = torch.isfinite(x)
            found[name] = float((x[finite] - y[finite]).abs().max()) if finite.any() else 0.0
    return found


def reload(compressed: Compressed, folder: Path) -> torch.nn.Module:
    compressed.compressor.save(compressed.result, folder)
    return type(compressed.compressor).load(folder)


def check_reload(compressed: Compressed, setup: Setup, folder: Path) -> dict[str, float]:
    """``save`` then the classmethod ``load`` gives a model that predicts what the in-memory one predicted:
    exactly for a float model, within RELOAD_RTOL of the output scale for quantised kernels. Returns the
    max differences per output."""
    reloaded = predict(reload(compressed, folder), setup)
    differences = max_differences(compressed.outputs, reloaded)
    name = compressed.compressor.name
    for output, difference in differences.items():
        expected = compressed.outputs[output]
        if is_quantised(compressed.compressor):
            scale = float(expected[torch.isfinite(expected)].abs().max()) if torch.isfinite(expected).any() else 0.0
            limit = RELOAD_RTOL * scale + RELOAD_ATOL
            assert difference <= limit, (
                f"{name} (compute {compressed.compressor.compute}): the reloaded model's {output} differ from the "
                f"in-memory model's by up to {difference:.3g}, over the tolerance {limit:.3g} "
                f"({RELOAD_RTOL:g} of the output scale {scale:.3g}): save/load does not round-trip the model")
        else:
            assert identical(expected, reloaded[output]), (
                f"{name} (fp32): the reloaded model's {output} differ from the in-memory model's by up to "
                f"{difference:.3g}: save/load does not round-trip the model (float models must reload exactly)")
    return differences


def baseline_size(setup: Setup, folder: Path) -> int:
    """Bytes of the fp32 source model's weight files as the ``baseline`` compressor saves them."""
    baseline = Baseline()
    baseline.save(CompressionResult(copy.deepcopy(setup.model)), folder)
    return saved_size(folder, format=baseline.save_format).size_bytes


def check_not_larger_on_disk(compressed: Compressed, baseline_bytes: int, folder: Path) -> int:
    """The compressor's saved weight files are not larger than the fp32 baseline's. Returns their bytes."""
    compressed.compressor.save(compressed.result, folder)
    size = saved_size(folder, format=compressed.compressor.save_format).size_bytes
    assert size <= baseline_bytes, (
        f"{compressed.compressor.name} saved {size} bytes ({compressed.compressor.save_format}), more than the fp32 "
        f"baseline's {baseline_bytes} ({size / baseline_bytes:.3f}x)")
    return size


def check_deterministic(cls, setup: Setup, first: Compressed) -> None:
    """A second ``compress`` with the same seed predicts exactly what the first did."""
    second = compress(cls, setup)
    assert second.model is not first.model, f"{cls.name} returned the same model object twice"
    differences = max_differences(first.outputs, second.outputs)
    unequal = {k: v for k, v in differences.items() if not identical(first.outputs[k], second.outputs[k])}
    assert not unequal, (f"{cls.name}: two compress() runs with seed {SEED} predict differently "
                         f"(max difference per output: {unequal})")


#: What an option value in a ``search_space`` may be: a JSON scalar, which Optuna's categorical distribution holds.
SEARCH_VALUE_TYPES = (bool, int, float, str, type(None))


def check_search_space(cls) -> None:
    """``search_space`` is None (not searched) or a dict of config field -> non-empty tuple of JSON scalars, and
    every value builds a valid config on its own (``from_params({option: value})``) that holds that very value."""
    space = cls.search_space
    if space is None:
        return
    assert isinstance(space, dict), (f"{cls.name}: search_space must be None or a dict of option -> tuple of values, "
                                     f"got {type(space).__name__}")
    known = {f.name for f in fields(cls.config_class)}
    for option, values in space.items():
        assert option in known, (f"{cls.name}: search_space names option {option!r}, which is not a field of "
                                 f"{cls.config_class.__name__} (known: {sorted(known)})")
        assert isinstance(values, tuple) and values, (f"{cls.name}: search_space[{option!r}] must be a non-empty "
                                                      f"tuple of values, got {values!r}")
        for value in values:
            assert isinstance(value, SEARCH_VALUE_TYPES), (
                f"{cls.name}: search_space option {option}, value {value!r} is a {type(value).__name__}; values must "
                "be JSON scalars (bool, int, float, str or None) so Optuna's categorical distribution can hold them")
            try:
                config = cls.config_class.from_params({option: value})
            except (ValueError, TypeError) as exc:
                raise AssertionError(f"{cls.name}: search_space option {option}, value {value!r} is refused by "
                                     f"{cls.config_class.__name__}: {exc}") from exc
            built = getattr(config, option)
            assert built == value and type(built) is type(value), (
                f"{cls.name}: search_space option {option}, value {value!r} ({type(value).__name__}) is read as "
                f"{built!r} ({type(built).__name__}); give it in the field's type")
