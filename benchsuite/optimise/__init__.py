"""``benchsuite optimise``: the best pipeline of compressors for an accuracy bound, found by search.

:mod:`~benchsuite.optimise.space` (what is searched), :mod:`~benchsuite.optimise.search` (the loop),
:mod:`~benchsuite.optimise.study` (the study file it keeps), :mod:`~benchsuite.optimise.frontier`;
the report section is :mod:`benchsuite.report.optimise`.
"""
