"""The report's pruning section: each task's pruned cells by the sparsity they reached, and its plot."""

from __future__ import annotations

import json
import shutil

import matplotlib.image
import pytest

from benchsuite.records import read_record
from benchsuite.report import write_reports
from benchsuite.report.sparsity import pruning_stage
from tests.test_report import MRPC, results  # noqa: F401 (the fixture)


@pytest.mark.parametrize(("stem", "expected"), [
    ("magnitude-543bcf853049", ("magnitude", 0.9, True, 3)),  # alone, the embedding table pruned too
    ("movement+embedding_int8+csr-5335d5cf603a", ("movement", 0.9, False, 3)),  # the first of three stages
    ("distill-1243b599add5", None),  # no weights zeroed
])
def test_the_pruning_stage_is_found_alone_or_in_a_pipeline(stem, expected):
    stage = pruning_stage(read_record(MRPC / f"{stem}.json"))
    if expected is None:
        assert stage is None
        return
    name, layout, recovery = stage
    assert (name, layout["sets"]["encoder_linear"]["sparsity"], "word_embeddings" in layout["sets"],
            recovery["epochs"]) == expected


def test_pruned_cells_are_listed_by_the_sparsity_they_reached_and_drawn(results, tmp_path):  # noqa: F811
    folder = results / "quick" / "mrpc" / "all-MiniLM-L6-v2"
    stem = "magnitude-543bcf853049"
    data = json.loads((folder / f"{stem}.json").read_text())  # the same cell, as if pruned to 50% in 2 epochs
    data["key"] = "half" + data["key"][4:]
    data["compressor"]["changed"] = {**data["compressor"]["changed"], "sparsity": 0.5}
    data["compressor"]["layout"]["sets"]["encoder_linear"]["sparsity"] = 0.5
    data["compressor"]["recovery"].update(epochs=2, steps=230)
    data["predictions_file"] = "magnitude-half.predictions.jsonl"
    (folder / "magnitude-half.json").write_text(json.dumps(data))
    shutil.copy(folder / f"{stem}.predictions.jsonl", folder / data["predictions_file"])

    write_reports(results, tmp_path / "out")
    text = (tmp_path / "out" / "quick.md").read_text()
    section = text[text.index("## Pruning: retention against sparsity"):text.index("## Definitions")]
    table = [[part.strip() for part in line.split("|")[1:-1]] for line in section.splitlines() if line.startswith("| ")]
    rows = [row for row in table if row[0].endswith("%")]  # not the header
    assert [row[:4] for row in rows] == [["50.0%", "magnitude", "pruned too", "2 ep, 230 steps"],
                                         ["90.0%", "magnitude", "pruned too", "3 ep, 345 steps"]]
    assert "sparsity=0.5" in rows[0][4] and "distill" not in section  # only cells that zeroed encoder weights
    plot = next((tmp_path / "out" / "quick").glob("mrpc-all-minilm-l6-v2-sparsity-*.png"))
    assert f"]({plot.relative_to(tmp_path / 'out').as_posix()})" in section
    image = matplotlib.image.imread(plot)
    assert image.shape[0] > 500 and image.std() > 0.05  # drawn, not blank
