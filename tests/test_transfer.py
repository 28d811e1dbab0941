"""A transfer set: other tasks' training rows, unlabelled, as more inputs for recovery's distillation."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace

import datasets
import pytest
import torch
from transformers import BertForSequenceClassification

from benchsuite.compressors.base import CompressionContext
from benchsuite.compressors.registry import build_compressor
from benchsuite.data import load_task_data
from benchsuite.distillation.recovery import RECOVERY_NEEDS, RecoveryConfig, recover
from benchsuite.distillation.teacher import teacher_outputs
from benchsuite.distillation.transfer import TransferData, normalised, transfer_set
from benchsuite.engine import IGNORED_LABEL
from benchsuite.errors import UsageError
from benchsuite.models import load_tokenizer, resolve_model
from benchsuite.tasks import load_task, task_kind
from benchsuite.testing import tiny_config


def _kind(task: str, tiny_model):
    spec = load_task(task)
    return task_kind(spec, load_tokenizer(resolve_model(str(tiny_model)), max_length=spec.max_length))


def test_transfer_rows_are_the_sources_training_pairs_unlabelled_less_evaluated_text(tiny_model, data_env):
    kind = _kind("mrpc", tiny_model)
    rte = load_task_data(load_task("rte"), max_train=None, max_eval=1, seed=0).train
    first, second = rte[0]["sentence1"], rte[1]["sentence2"]
    # the evaluation rows hold two of rte's training sentences, spelled with other case and spacing
    evaluated = datasets.Dataset.from_dict({"sentence1": ["  " + first.upper()], "sentence2": [second + " "],
                                            "label": [0]})
    found = transfer_set(kind, ["rte"], evaluated, max_rows=None, seed=0)
    dropped = sum(normalised(a) in {normalised(first), normalised(second)} or
                  normalised(b) in {normalised(first), normalised(second)}
                  for a, b in zip(rte["sentence1"], rte["sentence2"], strict=True))
    assert dropped >= 2
    assert found.facts[0]["task"] == "rte" and found.facts[0]["split"] == "train"
    assert found.facts[0]["rows_available"] == len(rte)
    assert found.facts[0]["dropped_in_evaluation"] == dropped
    assert found.facts[0]["rows"] == len(found.features) == len(rte) - dropped
    assert {f["labels"] for f in found.features} == {IGNORED_LABEL}
    # read as mrpc's pair: both sentences, in order, behind one [SEP]
    expected = kind.tokenizer(rte[2]["sentence1"], rte[2]["sentence2"], truncation=True, max_length=128)["input_ids"]
    assert expected in [f["input_ids"] for f in found.features]


def test_transfer_refuses_sources_and_targets_it_cannot_read(tiny_model, data_env):
    evaluated = datasets.Dataset.from_dict({"sentence1": ["a"], "sentence2": ["b"], "label": [0]})
    with pytest.raises(UsageError, match="text columns"):  # a single sentence is not a pair
        transfer_set(_kind("mrpc", tiny_model), ["sst2"], evaluated, max_rows=None, seed=0)
    with pytest.raises(UsageError, match="the task itself"):
        transfer_set(_kind("mrpc", tiny_model), ["mrpc"], evaluated, max_rows=None, seed=0)
    with pytest.raises(UsageError, match="regression"):
        transfer_set(_kind("stsb", tiny_model), ["rte"], evaluated, max_rows=None, seed=0)
    with pytest.raises(UsageError, match="only for classification"):
        transfer_set(_kind("conll2003", tiny_model), ["sst2"], evaluated, max_rows=None, seed=0)


def test_transfer_option_parses_as_a_list_and_needs_a_teacher_signal():
    assert build_compressor("cross_layer:transfer=stsb,rte,epochs=2").config.transfer == ("stsb", "rte")
    assert build_compressor("cross_layer:transfer=[stsb,rte],epochs=2").config.transfer == ("stsb", "rte")
    assert build_compressor('cross_layer:transfer=["stsb"]').config.transfer == ("stsb",)
    for keep in ("0,3", "[0,3]", "[0, 3]"):
        assert build_compressor(f"distill:keep={keep}").config.keep == (0, 3)
    assert build_compressor("distill:keep=").config.keep == build_compressor("distill:keep=[]").config.keep == ()
    with pytest.raises(UsageError, match="teach only through the teacher"):
        build_compressor("cross_layer:transfer=rte,alpha=0")
    with pytest.raises(UsageError, match="distinct"):
        build_compressor("cross_layer:transfer=rte,rte")


def test_recovery_trains_on_batches_of_transfer_rows_alone_and_records_them(tiny_model, data_env, tmp_path):
    kind = _kind("mrpc", tiny_model)
    spec = kind.spec
    labelled = kind.train_features(load_task_data(spec, max_train=2, max_eval=1, seed=0).train)
    extra = kind.unlabelled_features(load_task_data(load_task("rte"), max_train=46, max_eval=1, seed=0).train
                                     .select_columns(["sentence1", "sentence2"]))
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(tiny_config(30522, num_hidden_layers=2, num_labels=2)).eval()
    features = labelled + extra
    outputs = teacher_outputs(lambda: teacher, features, names=kind.outputs, per_token=kind.per_token,
                              pad_token_id=kind.tokenizer.pad_token_id, cache_dir=tmp_path, teacher_key="t")
    asked = []

    def transfer(names):
        asked.append(names)
        return TransferData(features, outputs, [{"task": "rte", "rows": len(extra)}])

    context = CompressionContext(needs=RECOVERY_NEEDS, task=spec, tokenizer=kind.tokenizer, seed=0,
                                 providers={"train_data": labelled, "teacher": lambda: teacher,
                                            "teacher_outputs": None, "transfer_data": lambda: transfer},
                                 train_config=replace(spec.train, epochs=1.0, batch_size=8))
    student = copy.deepcopy(teacher).train()
    before = [p.detach().clone() for p in student.parameters()]
    # 6 batches of 8, of which 4 at least hold transfer rows alone: a hard loss over no label would be NaN there
    result = recover(student, context=context, options=RecoveryConfig(transfer=("rte",), hidden_weight=1.0),
                     desc="test")
    assert asked == [("rte",)]
    assert result["examples"] == 48 and result["steps"] == 6 and math.isfinite(result["final_loss"])
    assert result["transfer"] == [{"task": "rte", "rows": 46}]
    assert all(torch.isfinite(p).all() for p in student.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))


def test_transfer_is_left_out_of_a_configs_identity_at_its_default():
    assert "transfer" not in RecoveryConfig().to_json()["params"]
    assert RecoveryConfig(transfer=("rte",)).to_json()["params"]["transfer"] == ("rte",)


def test_a_cell_with_a_transfer_set_runs_end_to_end_and_records_its_sources(tiny_model, data_env, tmp_path):
    from benchsuite.cli import main

    results = tmp_path / "results"
    assert main(["run", "--preset", "smoke", "--model", str(tiny_model), "--results-dir", str(results),
                 "--cache-dir", str(tmp_path / "cache"), "--tasks", "mrpc", "--threads", "1",
                 "--compressors", "distill:transfer=[rte,stsb]"]) == 0
    [record] = [json.loads(p.read_text()) for p in results.rglob("distill-*.json")]
    assert record["status"] == "ok" and record["compressor"]["changed"] == {"transfer": ["rte", "stsb"]}
    recovery = record["compressor"]["recovery"]
    facts = {fact["task"]: fact for fact in recovery["transfer"]}
    assert set(facts) == {"rte", "stsb"}
    for fact in facts.values():  # the smoke preset's 256 rows of each source, less any evaluated text
        assert fact["split"] == "train" and fact["rows"] + fact["dropped_in_evaluation"] == 256
    assert recovery["examples"] == 256 + facts["rte"]["rows"] + facts["stsb"]["rows"]
