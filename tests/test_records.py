"""Schema-2 records: typed sections, the schema-1 upgrader, and the committed results they describe."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchsuite.cellkey import key_of_record_json
from benchsuite.measure.speed import NOISY
from benchsuite.metrics.seqeval import ENTITY_MODE_NOTE
from benchsuite.records import SCHEMA_VERSION, Record, read_record, record_files, upgrade, upgrade_files
from benchsuite.report import write_reports
from benchsuite.tasks import load_task

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
SCHEMA1 = Path(__file__).parent / "data" / "schema1_bf16_mrpc.json"  # a bf16 record as wave 1 wrote it


def schema1() -> dict:
    return json.loads(SCHEMA1.read_text())


def test_upgrade_gives_the_key_a_rerun_on_that_machine_would_compute():
    old = schema1()
    new = upgrade(old)
    assert new["schema_version"] == SCHEMA_VERSION and new["upgraded_from"] == 1
    assert new["key"] == key_of_record_json(old, provider="benchsuite 0.1.0").digest()
    assert new["cell"]["machine"]["cpu_vector_flags"] == old["provenance"]["machine"]["cpu_vector_flags"]
    assert new["predictions_file"] == f"bf16-{new['key']}.predictions.jsonl"
    assert old["schema_version"] == 1  # the input is not modified


def test_upgrade_withdraws_an_efficiency_held_against_the_wrong_peak():
    old = schema1()
    assert old["measurements"]["efficiency"]["fraction_of_peak"] > 1  # 2.2: bf16 against the fp32 peak
    record = Record.from_json(upgrade(old))
    efficiency = record.measurements.efficiency
    assert efficiency["fraction_of_peak"] is None and efficiency["peak_kind"] == "bf16"
    assert "held against the fp32 peak" in efficiency["note"]
    assert any("fraction of peak withdrawn" in note for note in record.notes)
    assert efficiency["achieved_gflops"] == old["measurements"]["efficiency"]["achieved_gflops"]  # measured: kept
    assert record.compressor.compute == "bf16"


def test_upgrade_withdraws_a_fraction_above_one_of_the_right_kind():
    old = schema1()
    old["compressor"]["name"] = "baseline"  # an fp32 cell whose cached peak was taken on a busy machine
    record = Record.from_json(upgrade(old))
    assert record.measurements.efficiency["fraction_of_peak"] is None
    assert "above 1" in record.measurements.efficiency["note"]


def test_the_report_holds_every_record_against_the_best_peak_its_machine_measured():
    """A peak measured while the cores were busy reads low; the records taken with it would read too high."""
    from benchsuite.report.markdown import best_peaks, fraction_of_peak  # noqa: PLC0415

    def fp32_record(peak: float, achieved: float) -> Record:
        data = upgrade(schema1())
        data["measurements"]["efficiency"] = {"peak_kind": "fp32", "peak_gflops": peak, "achieved_gflops": achieved,
                                              "fraction_of_peak": achieved / peak,
                                              "matmul_peak": {"fp32_gflops": peak, "int8_gops": 4 * peak}}
        return Record.from_json(data)

    busy, idle = fp32_record(peak=60.0, achieved=50.0), fp32_record(peak=200.0, achieved=150.0)
    withdrawn = upgrade(schema1())  # bf16 held against the fp32 peak (214): that peak_gflops is not bf16's
    withdrawn["measurements"]["efficiency"]["matmul_peak"] = {}
    withdrawn = Record.from_json(withdrawn)
    best = best_peaks([busy, idle, withdrawn])
    assert best == {"fp32": 200.0, "int8": 800.0}
    assert fraction_of_peak(busy.measurements.efficiency, best) == pytest.approx(0.25)  # its own figure read 0.83
    assert fraction_of_peak(idle.measurements.efficiency, best) == pytest.approx(0.75)
    assert fraction_of_peak(withdrawn.measurements.efficiency, best) is None  # no bf16 peak measured
    assert fraction_of_peak({"peak_kind": "fp32", "achieved_gflops": 250.0}, best) is None  # never above 1


def test_upgrade_derives_the_verdict_again_with_the_noise_rule():
    old = schema1()
    assert Record.from_json(upgrade(old)).measurements.speedup_realised == "faster"
    old["measurements"]["speed"]["latency_batch1"]["baseline"]["cv"] = 1.2
    assert Record.from_json(upgrade(old)).measurements.speedup_realised == NOISY


def test_changed_options_come_from_the_installed_defaults_only_when_asked():
    old = schema1()
    assert "changed" not in old["compressor"]
    assert Record.from_json(upgrade(old)).compressor.changed is None  # the report then shows every option
    config = old["compressor"]["config"]
    installed = {**config, "params": dict(config["params"])}
    assert Record.from_json(upgrade(old, defaults=lambda name: installed)).compressor.changed == {}
    installed["version"] = config["version"] + 1  # a newer config: its defaults say nothing about the old one
    assert Record.from_json(upgrade(old, defaults=lambda name: installed)).compressor.changed is None


def test_a_record_round_trips_through_json():
    record = Record.from_json(upgrade(schema1()))
    again = Record.from_json(json.loads(json.dumps(record.to_json())))
    assert again == record and again.to_json() == record.to_json()


def test_a_section_with_unknown_keys_is_refused(tmp_path):
    data = upgrade(schema1())
    data["task"]["surprise"] = 1
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="TaskInfo: unknown keys"):
        read_record(path)


def test_upgrade_files_renames_records_and_their_predictions(tmp_path):
    folder = tmp_path / "quick" / "mrpc" / "m"
    folder.mkdir(parents=True)
    shutil.copy(SCHEMA1, folder / "bf16-2f828fad4d41.json")
    (folder / "bf16-2f828fad4d41.predictions.jsonl").write_text('{"row": 0}\n')
    ((old, new),) = upgrade_files(tmp_path)
    assert not old.exists() and new.name == f"bf16-{read_record(new).key}.json"
    assert new.with_suffix(".predictions.jsonl").read_text() == '{"row": 0}\n'
    assert upgrade_files(tmp_path) == []  # already current: nothing to do


def test_upgrade_fills_in_the_family_of_current_records_that_lack_it(tmp_path):
    folder = tmp_path / "quick" / "mrpc" / "m"
    folder.mkdir(parents=True)
    shutil.copy(SCHEMA1, folder / "bf16-2f828fad4d41.json")
    ((_, current),) = upgrade_files(tmp_path)  # schema 2, no family known
    assert read_record(current).compressor.family is None
    before = current.read_text()
    assert upgrade_files(tmp_path, family_of=lambda name: None) == []  # nothing known: untouched
    assert upgrade_files(tmp_path, family_of={"bf16": "quantisation"}.get) == [(current, current)]
    record = read_record(current)
    assert record.compressor.family == "quantisation"
    assert json.loads(before) == {**json.loads(current.read_text()), "compressor": {
        **record.to_json()["compressor"], "family": None}}  # nothing else changed
    assert upgrade_files(tmp_path, family_of={"bf16": "quantisation"}.get) == []


def test_the_report_reads_records_without_importing_any_compressor(tmp_path):
    folder = tmp_path / "results" / "quick" / "mrpc" / "m"
    folder.mkdir(parents=True)
    shutil.copy(SCHEMA1, folder / "bf16.json")
    code = ("import sys; from pathlib import Path; from benchsuite.report import write_reports; "
            f"write_reports(Path({str(tmp_path / 'results')!r}), Path({str(tmp_path / 'out')!r})); "
            "loaded = [m for m in sys.modules if m.startswith(('benchsuite.compressors', 'benchsuite_zero_small.')) "
            "or m == 'benchsuite_zero_small']; "
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    assert "bf16" in (tmp_path / "out" / "quick.md").read_text()


# --- the committed results ---------------------------------------------------------------------------


def committed() -> list[tuple[Path, dict]]:
    return [(p, json.loads(p.read_text())) for p in record_files(RESULTS)]


def test_every_committed_study_reads_and_names_records_that_exist():
    """The optimiser's study files (not records, so left out above): typed, and every record they name is here,
    on this study's machine and task."""
    from benchsuite.optimise.study import SUFFIX, read_study

    for path in sorted(RESULTS.rglob(f"*{SUFFIX}")):
        study = read_study(path)
        assert study.runs and all(run.commit and run.dirty is False for run in study.runs), path
        for candidate in study.candidates:
            if candidate.record is not None:
                record = read_record(RESULTS / candidate.record)
                assert record.task.name == study.key.task and record.cell.machine.torch_threads == \
                    study.key.machine["torch_threads"], (path, candidate.record)
            if candidate.status == "measured":
                assert candidate.record is not None and candidate.retention is not None, (path, candidate.spec)


def test_every_committed_record_is_current_and_named_by_its_key():
    found = committed()
    assert found, "results/ holds no records"
    for path, data in found:
        assert data["schema_version"] == SCHEMA_VERSION, path
        record = read_record(path)
        assert path.name == f"{record.cell.file_stem()}.json" and record.key == record.cell.digest(), path


def test_every_committed_record_names_a_clean_commit_of_this_history():
    shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=REPO, capture_output=True,
                             text=True)
    if shallow.returncode != 0 or shallow.stdout.strip() == "true":
        pytest.skip("not a full git checkout: commits cannot be checked")
    for path, data in committed():
        git = data["provenance"]["git"]
        assert git["dirty"] is False, f"{path}: written from a modified checkout"
        ancestor = subprocess.run(["git", "merge-base", "--is-ancestor", git["commit"], "HEAD"], cwd=REPO,
                                  capture_output=True)
        assert ancestor.returncode == 0, f"{path}: commit {git['commit']} is not in this history"


def test_the_report_renders_every_committed_record_and_no_efficiency_above_one(tmp_path):
    found = committed()
    for path, data in found:
        fraction = ((data.get("measurements") or {}).get("efficiency") or {}).get("fraction_of_peak")
        assert fraction is None or 0 < fraction <= 1, path
    written = write_reports(RESULTS, tmp_path, plots=False)
    markdown = {p.stem: p.read_text() for p in written if p.suffix == ".md" and p.parent == tmp_path}
    for name, text in markdown.items():
        for line in text.splitlines():
            for cell in line.split("|"):
                cell = cell.strip()
                if cell.endswith(("(fp32)", "(int8)", "(bf16)", "(fp16)")):
                    assert int(cell.split()[0]) <= 100, f"{name}: {line}"
    # every successful record is a row of summary.csv, and every failed one is listed in its preset's report
    with (tmp_path / "summary.csv").open() as f:
        rows = {(row["preset"], row["key"]) for row in csv.DictReader(f)}
    for path, data in found:
        if data["status"] == "ok":
            assert (data["preset"], data["key"]) in rows, path
        else:
            assert str(path.relative_to(RESULTS)) in markdown[data["preset"]], path
    # the NER scores say which seqeval mode counted them (an I- tag without a B- starts an entity)
    assert ENTITY_MODE_NOTE in markdown["quick"] and "non-strict" in load_task("conll2003").description
