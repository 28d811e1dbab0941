import json
from importlib.metadata import EntryPoint

import pytest

from benchsuite.compressors import registry
from benchsuite.compressors.base import CompressionContext
from benchsuite.compressors.identity import Baseline, BaselineConfig
from benchsuite.errors import UsageError
from tests.plugins import ScaleConfig


def test_config_json_round_trip_and_stable_hash():
    config = ScaleConfig(factor=0.5)
    data = json.loads(json.dumps(config.to_json()))
    assert data == {"type": "ScaleConfig", "version": 1, "params": {"factor": 0.5}}
    again = ScaleConfig.from_params(data["params"])
    assert again == config
    assert again.config_hash() == config.config_hash()
    assert ScaleConfig(factor=0.25).config_hash() != config.config_hash()


def test_baseline_hash_is_fixed_across_runs():
    # Names result files: changing it orphans every committed record.
    assert BaselineConfig().config_hash() == "cf3511a20247"


def test_config_validates_itself():
    with pytest.raises(ValueError, match="factor must be in"):
        ScaleConfig(factor=1.5)
    with pytest.raises(ValueError, match="unknown option"):
        ScaleConfig.from_params({"factr": 0.5})


def test_baseline_is_registered_through_the_entry_point_group():
    assert registry.registered()["baseline"].entry_point.group == "benchsuite.compressors"
    assert registry.get_compressor_class("baseline") is Baseline


def test_unknown_compressor_suggests_close_names():
    with pytest.raises(UsageError, match="did you mean baseline"):
        registry.get_compressor_class("baselin")


def test_build_compressor_parses_options(monkeypatch):
    _register(monkeypatch, raising="tests.plugins:Raising")
    compressor = registry.build_compressor("raising:factor=0.5")
    assert compressor.config == ScaleConfig(factor=0.5)
    with pytest.raises(UsageError, match="factor must be in"):
        registry.build_compressor("raising:factor=2")
    with pytest.raises(UsageError, match="not key=value"):
        registry.build_compressor("raising:factor")


def test_broken_plugin_is_reported_and_others_still_load(monkeypatch):
    _register(monkeypatch, broken="tests.no_such_module:Thing")
    with pytest.raises(UsageError, match="broken.*failed to import"):
        registry.get_compressor_class("broken")
    assert registry.get_compressor_class("baseline") is Baseline


def test_plugins_can_be_disabled_by_name(monkeypatch):
    _register(monkeypatch, raising="tests.plugins:Raising")
    monkeypatch.setenv("BENCHSUITE_DISABLE_PLUGINS", "raising, other")
    assert "raising" not in registry.registered()
    assert "baseline" in registry.registered()


def test_context_refuses_undeclared_needs():
    context = CompressionContext(needs=frozenset({"train_data"}), task=None, tokenizer=None, seed=0,
                                 providers={"train_data": lambda: [1], "teacher": lambda: "teacher",
                                            "calibration_data": lambda: []})
    assert context.train_data == [1]
    with pytest.raises(PermissionError, match="did not declare 'teacher'"):
        context.teacher  # noqa: B018


def _register(monkeypatch, **plugins: str) -> None:
    """Add entry points to the real group, as an installed package would."""
    real = registry.entry_points

    def patched(*, group):
        extra = [EntryPoint(name, value, group) for name, value in plugins.items()]
        return list(real(group=group)) + extra

    monkeypatch.setattr(registry, "entry_points", patched)


def test_option_values_take_their_field_type(monkeypatch):
    # "factor=1" and "factor=1.0" are one config: one hash, one record.
    assert ScaleConfig.from_params({"factor": 1}) == ScaleConfig(factor=1.0)
    assert ScaleConfig.from_params({"factor": 1}).config_hash() == ScaleConfig(factor=1.0).config_hash()
    with pytest.raises(ValueError, match="must be a number"):
        ScaleConfig.from_params({"factor": "half"})
    _register(monkeypatch, raising="tests.plugins:Raising")
    with pytest.raises(UsageError, match="NaN is not a valid option value"):
        registry.build_compressor("raising:factor=NaN")
