"""The optimiser's frontier: the measured candidates that no other one beats on retention, speed and size
at once (the same rule as the report's, :mod:`benchsuite.report.frontier`, over a study's candidates)."""

from __future__ import annotations

from collections.abc import Iterable

from benchsuite.optimise.study import CandidateResult
from benchsuite.report.frontier import dominates


def _objectives(candidate: CandidateResult) -> tuple[float, float, float] | None:
    if candidate.status != "measured" or None in (candidate.retention, candidate.speedup, candidate.compression):
        return None
    return candidate.retention, candidate.speedup, candidate.compression


def candidate_frontier(candidates: Iterable[CandidateResult]) -> list[CandidateResult]:
    """The non-dominated measured candidates (one per spec: a candidate proposed twice counts once), in order."""
    unique: dict[str, CandidateResult] = {}
    for candidate in candidates:
        if _objectives(candidate) is not None:
            unique.setdefault(candidate.spec, candidate)
    scored = [(c, _objectives(c)) for c in unique.values()]
    return [c for c, o in scored if not any(dominates(other, o) for _, other in scored)]
