"""The cell key: every part of what decides a cell's result changes its name, and nothing else does."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from benchsuite import runner
from benchsuite.cellkey import CellKey, DataKey, MachineKey, key_of_record_json
from benchsuite.cli import main
from benchsuite.compressors.registry import build_compressor
from benchsuite.data import load_task_data
from benchsuite.models import resolve_model
from benchsuite.presets import get_preset
from benchsuite.runner import RunOptions, cell_key
from benchsuite.tasks import load_task
from benchsuite.testing import tiny_model_dir

KEY = CellKey(
    preset="quick", task="sst2", task_spec_digest="a" * 16, task_version=1, model="m", model_weights_sha256="b" * 64,
    train_data=DataKey(split="train", fingerprint="c" * 64, selection_sha256="d" * 16, rows_used=100),
    eval_data=DataKey(split="validation", fingerprint="e" * 64, selection_sha256="f" * 16, rows_used=50),
    epochs=1.0, seed=42, compressor="dynamic_int8", config_hash="0" * 12, provider="benchsuite 0.1.0",
    machine=MachineKey(cpu="AMD EPYC", cpu_vector_flags=("avx2", "fma"), torch_threads=2),
)
CHANGES = {
    "preset": "full", "task": "mrpc", "task_spec_digest": "9" * 16, "task_version": 2, "model": "other",
    "model_weights_sha256": "9" * 64, "train_data": dataclasses.replace(KEY.train_data, selection_sha256="9" * 16),
    "eval_data": dataclasses.replace(KEY.eval_data, rows_used=49), "epochs": 2.0, "seed": 7, "compressor": "bf16",
    "config_hash": "1" * 12, "provider": "benchsuite 0.2.0",
    "machine": dataclasses.replace(KEY.machine, cpu_vector_flags=("avx2", "avx512_vnni", "fma")),
}


def test_every_field_is_tested_here():
    assert set(CHANGES) == {f.name for f in dataclasses.fields(CellKey)}


@pytest.mark.parametrize("part", sorted(CHANGES))
def test_each_part_changes_the_key(part):
    changed = dataclasses.replace(KEY, **{part: CHANGES[part]})
    assert changed.digest() != KEY.digest()
    assert changed.file_stem() != KEY.file_stem()


MACHINE_CHANGES = {"cpu": "Intel Xeon", "cpu_vector_flags": ("avx2",), "torch_threads": 1}
DATA_CHANGES = {"split": "test", "fingerprint": "9" * 64, "selection_sha256": "9" * 16, "rows_used": 99}


def test_every_machine_and_data_part_is_tested_here():
    assert set(MACHINE_CHANGES) == {f.name for f in dataclasses.fields(MachineKey)}
    assert set(DATA_CHANGES) == {f.name for f in dataclasses.fields(DataKey)}


@pytest.mark.parametrize("part", sorted(MACHINE_CHANGES))
def test_each_machine_part_changes_the_key(part):
    machine = dataclasses.replace(KEY.machine, **{part: MACHINE_CHANGES[part]})
    assert dataclasses.replace(KEY, machine=machine).digest() != KEY.digest()


@pytest.mark.parametrize("split", ["train_data", "eval_data"])
@pytest.mark.parametrize("part", sorted(DATA_CHANGES))
def test_each_data_part_of_either_split_changes_the_key(split, part):
    """The source file's content (fingerprint), the split, the rows chosen and how many: each alone."""
    data = dataclasses.replace(getattr(KEY, split), **{part: DATA_CHANGES[part]})
    assert dataclasses.replace(KEY, **{split: data}).digest() != KEY.digest()


def test_key_round_trips_and_is_stable():
    data = json.loads(json.dumps(KEY.to_json()))
    assert CellKey.from_json(data) == KEY
    # Pinned: a change to how keys are hashed renames every record, so it must be deliberate.
    assert CellKey.from_json(data).digest() == KEY.digest() == "f45a92188772"
    assert KEY.file_stem() == f"dynamic_int8-{KEY.digest()}"


@pytest.fixture()
def parts(tiny_model, data_env):
    """What runner.cell_key reads, for sst2 on the smoke preset."""
    spec, preset = load_task("sst2"), get_preset("smoke")
    budget = preset.budget("sst2")
    data = load_task_data(spec, max_train=budget.max_train, max_eval=budget.max_eval, seed=42)
    opts = RunOptions(tasks=("sst2",), compressors=("baseline",), preset=preset, results_dir=Path("r"),
                      cache_dir=Path("c"))
    return spec, resolve_model(str(tiny_model)), data, runner._train_config(spec, budget), opts


def key_of(parts, **override):
    spec, ref, data, train_cfg, opts = parts
    given = {"spec": spec, "ref": ref, "data": data, "train_cfg": train_cfg, "opts": opts,
             "compressor": build_compressor("baseline"), **override}
    return cell_key(given["spec"], given["ref"], given["data"], given["train_cfg"], given["compressor"], given["opts"])


def test_runner_key_is_stable(parts):
    assert key_of(parts) == key_of(parts)


def test_a_bumped_task_version_is_a_new_cell(parts, tmp_path):
    source = Path(parts[0].source)
    text = source.read_text().replace("include: _glue.yaml", f"include: {source.parent / '_glue.yaml'}")
    bumped = tmp_path / "sst2.yaml"
    bumped.write_text(text + "version: 2\n")
    key = key_of(parts, spec=load_task(str(bumped)))
    assert key.task_version == 2 and key.digest() != key_of(parts).digest()


def test_other_weights_under_the_same_name_are_a_new_cell(parts, tmp_path):
    folder = tiny_model_dir(tmp_path / "bert", seed=0)
    before = resolve_model(str(folder))
    tiny_model_dir(folder, seed=1)  # retrained in place: the same path, so the same model name
    after = resolve_model(str(folder))
    assert after.name == before.name and after.weights_sha256 != before.weights_sha256
    assert key_of(parts, ref=after).digest() != key_of(parts, ref=before).digest()


def test_another_data_budget_or_seed_is_a_new_cell(parts):
    spec, _, _, _, opts = parts
    fewer = load_task_data(spec, max_train=100, max_eval=32, seed=42)
    assert key_of(parts, data=fewer).digest() != key_of(parts).digest()
    other_seed = load_task_data(spec, max_train=256, max_eval=32, seed=7)  # another sample of rows
    assert key_of(parts, data=other_seed).digest() != key_of(parts).digest()
    assert key_of(parts, opts=dataclasses.replace(opts, seed=7)).digest() != key_of(parts).digest()
    two_epochs = dataclasses.replace(parts[3], epochs=2.0)
    assert key_of(parts, train_cfg=two_epochs).digest() != key_of(parts).digest()


def test_another_config_or_compressor_is_a_new_cell(parts):
    assert key_of(parts, compressor=build_compressor("fp16")).digest() != \
        key_of(parts, compressor=build_compressor("bf16")).digest()  # one config class, one config hash
    assert key_of(parts, compressor=build_compressor("weight_only_int4")).digest() != \
        key_of(parts, compressor=build_compressor("weight_only_int8")).digest()  # the same: the name tells them apart
    assert key_of(parts, compressor=build_compressor("dynamic_int8")).digest() != \
        key_of(parts, compressor=build_compressor("dynamic_int8:per_channel=false")).digest()


def test_a_newer_plugin_version_is_a_new_cell(parts, monkeypatch):
    before = key_of(parts)
    monkeypatch.setattr(runner, "provider", lambda compressor: "benchsuite 9.9.9")
    assert key_of(parts).provider == "benchsuite 9.9.9" and key_of(parts).digest() != before.digest()


def test_another_machine_is_a_new_cell(parts, monkeypatch):
    before = key_of(parts)
    monkeypatch.setattr(runner, "cpu_model", lambda: "Some Other CPU")
    assert key_of(parts).digest() != before.digest()
    monkeypatch.undo()
    monkeypatch.setattr(runner, "cpu_vector_flags", lambda: ["avx2", "avx512_vnni", "fma", "not-this-cpu"])
    assert key_of(parts).digest() != before.digest()  # the same CPU name with other vector extensions
    monkeypatch.undo()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert key_of(parts).digest() != before.digest()
    finally:
        torch.set_num_threads(threads)


def test_a_record_names_the_key_its_run_computed(parts):
    key = key_of(parts)
    machine = {"cpu": key.machine.cpu, "torch_threads": key.machine.torch_threads,
               "cpu_vector_flags": list(key.machine.cpu_vector_flags)}
    record = {"preset": key.preset, "task": {"name": "sst2", "spec_digest": key.task_spec_digest, "version": 1},
              "model": {"name": key.model, "weights_sha256": key.model_weights_sha256},
              "data": {"train": dataclasses.asdict(parts[2].train_info),
                       "eval": dataclasses.asdict(parts[2].eval_info)},
              "baseline": {"hyper_parameters": {"epochs": key.epochs}},
              "provenance": {"seed": key.seed, "machine": machine},
              "compressor": {"name": "baseline", "config_hash": key.config_hash}}
    assert key_of_record_json(record, provider=key.provider) == key


def run_sst2(tiny_model, results, cache, *extra):
    return main(["run", "--preset", "smoke", "--tasks", "sst2", "--model", str(tiny_model), "--results-dir",
                 str(results), "--cache-dir", str(cache), "--threads", "1", *extra])


def test_seeds_are_cells_and_a_repeat_is_not(tiny_model, data_env, tmp_path, capsys):
    """The issue's check: --seed 1 then --seed 2 gives two records; the same command twice gives one."""
    results, cache = tmp_path / "results", tmp_path / "cache"
    assert run_sst2(tiny_model, results, cache, "--seed", "1") == 0
    assert run_sst2(tiny_model, results, cache, "--seed", "2") == 0
    assert "1 written, 0 already done" in capsys.readouterr().out
    found = sorted(results.rglob("*.json"))
    assert len(found) == 2
    assert sorted(json.loads(p.read_text())["cell"]["seed"] for p in found) == [1, 2]
    assert run_sst2(tiny_model, results, cache, "--seed", "2") == 0
    assert "0 written, 1 already done" in capsys.readouterr().out
    assert sorted(results.rglob("*.json")) == found
