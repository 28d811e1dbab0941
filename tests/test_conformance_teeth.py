"""The conformance checks have teeth: each fails on a compressor broken in the way it is meant to catch.

The broken compressors live in ``tests/plugins.py`` and are reached through the entry-point registry
(the ``plugins`` fixture), exactly as ``tests/test_conformance.py`` reaches a real one, and run
through the same functions (``tests/conformance_checks.py``). Each must fail its own check and pass
the other two, so a failure is the check seeing the breakage, not the plugin failing everywhere; the
correct ``zero_half`` plugin passes all three. The search-space check reads only the class, so its
broken compressors are subclasses of ``zero_half`` defined here.
"""

import pytest

from benchsuite.compressors.registry import get_compressor_class
from tests import conformance_checks as checks
from tests.plugins import ZeroHalf

KIND, TASK = "classification", "sst2"
CHECKS = ("reload", "not_larger_on_disk", "deterministic")
# broken plugin -> the one check it breaks (None: a correct plugin, passes every check)
BREAKS = {"stale_save": "reload", "half_saves_float": "reload", "double_save": "not_larger_on_disk",
          "unseeded": "deterministic", "zero_half": None}


@pytest.fixture(scope="module")
def _state() -> dict:
    return {}


@pytest.fixture()
def setup(tiny_model, data_env, tmp_path_factory, _state) -> checks.Setup:
    if "setup" not in _state:
        _state["setup"] = checks.make_setup(tiny_model, KIND, TASK, tmp_path_factory.mktemp("teacher-outputs"))
    return _state["setup"]


def run_check(check: str, cls, setup: checks.Setup, folder) -> None:
    compressed = checks.compress(cls, setup)
    if check == "reload":
        checks.check_reload(compressed, setup, folder / "model")
    elif check == "not_larger_on_disk":
        checks.check_not_larger_on_disk(compressed, checks.baseline_size(setup, folder / "baseline"),
                                        folder / "model")
    else:
        checks.check_deterministic(cls, setup, compressed)


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("name", sorted(BREAKS))
def test_each_check_fails_on_its_broken_compressor_only(name, check, setup, plugins, tmp_path):
    cls = get_compressor_class(name)
    if BREAKS[name] == check:
        with pytest.raises(AssertionError) as failure:
            run_check(check, cls, setup, tmp_path)
        assert name in str(failure.value)
    else:
        run_check(check, cls, setup, tmp_path)


def test_the_stateless_check_fails_on_a_compressor_that_keeps_state(setup, plugins):
    with pytest.raises(AssertionError, match="stateful: compress left state on the compressor instance \\(layout\\)"):
        checks.check_stateless(checks.compress(get_compressor_class("stateful"), setup))
    checks.check_stateless(checks.compress(get_compressor_class("zero_half"), setup))


def test_an_unavailable_compressor_is_skipped_with_its_reason(monkeypatch):
    from benchsuite.compressors.ort_int8 import OrtInt8

    monkeypatch.setattr(OrtInt8, "requires", ("benchsuite_no_such_package",))
    with pytest.raises(pytest.skip.Exception, match="ort_int8 is unavailable here: it needs benchsuite_no_such"):
        checks.instantiate(OrtInt8)


def test_the_reload_tolerance_applies_to_quantised_kernels_only(setup, plugins, tmp_path):
    # half_saves_float's reload error is within what a float tolerance of 1e-2 would let through; only the
    # quantised tolerance (1e-4 of the output scale) and the exact float comparison catch it.
    compressed = checks.compress(get_compressor_class("half_saves_float"), setup)
    assert checks.is_quantised(compressed.compressor)
    reloaded = checks.predict(checks.reload(compressed, tmp_path / "model"), setup)
    difference = checks.max_differences(compressed.outputs, reloaded)["logits"]
    scale = float(compressed.outputs["logits"].abs().max())
    assert checks.RELOAD_RTOL * scale < difference < 1e-2 * scale


class UnknownSearchOption(ZeroHalf):
    name = "unknown_search_option"
    search_space = {"factor": (0.5,), "strength": (0.5, 1.0)}  # ScaleConfig has no "strength"


class WrongSearchType(ZeroHalf):
    name = "wrong_search_type"
    search_space = {"factor": (0.5, "1.0")}  # a string for a float field


@pytest.mark.parametrize(("cls", "message"), [
    (UnknownSearchOption, "unknown_search_option: search_space names option 'strength', which is not a field"),
    (WrongSearchType, "wrong_search_type: search_space option factor, value '1.0' is refused by ScaleConfig"),
], ids=["unknown option", "wrong type"])
def test_the_search_space_check_fails_on_a_bad_search_space(cls, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_search_space(cls)
    checks.check_search_space(type("Good", (ZeroHalf,), {"search_space": {"factor": (0.5, 1.0)}}))
