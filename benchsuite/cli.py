"""The ``benchsuite`` command: ``list``, ``describe``, ``run``, ``optimise``, ``report``, ``export`` and ``upgrade``.

Bad usage (unknown task or compressor, missing model or data) prints one line and
exits with code 2; a run in which some cells failed exits with code 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path

from benchsuite.cache import CACHE_ENV
from benchsuite.errors import UsageError

EXIT_FAILED_CELLS = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2: no usage dump
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _csv(value: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names, got an empty one")
    return items


def _compressor_list(value: str) -> tuple[str, ...]:
    """``a,b:k=1,j=2,c`` -> ``(a, b:k=1,j=2, c)``: a piece with ``=`` and no ``:`` is an option of the one
    before, and so is a bare number (or ``[``...``]`` part) that continues a list option (``distill:keep=0,3``)."""
    specs: list[str] = []
    for piece in _csv(value):
        head = piece.split("+", 1)[0]  # a pipeline's next stage may follow an option: layers=3+dynamic_int8
        continues_list = bool(specs) and (specs[-1].count("[") > specs[-1].count("]")
                                          or re.fullmatch(r"-?\d+\]?", head) is not None)
        if ("=" in head and ":" not in head) or continues_list:
            if not specs:
                raise argparse.ArgumentTypeError(f"option {piece!r} comes before any compressor name")
            specs[-1] += f",{piece}"
        else:
            specs.append(piece)
    return tuple(specs)


def build_parser() -> argparse.ArgumentParser:
    from benchsuite.presets import DEFAULT_PRESET, PRESETS

    parser = _Parser(prog="benchsuite", description=__doc__.splitlines()[0],
                     epilog="Start with 'benchsuite run' (the quick preset: baseline and int8 on four tasks), then "
                            "'benchsuite report' and open reports/quick.md.")
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    lister = sub.add_parser("list", help="list tasks (with where their data comes from) or compressors")
    lister.add_argument("what", choices=["tasks", "compressors"], help="tasks or compressors")

    describer = sub.add_parser("describe", help="a compressor's purpose, needs and options (type, default, meaning)")
    describer.add_argument("name", help="a compressor name, as 'benchsuite list compressors' prints it")

    runner = sub.add_parser("run", help="fine-tune baselines, compress, score, and write records")
    runner.add_argument("--model", help="Hub id or local folder (default: all-MiniLM-L6-v2)")
    runner.add_argument("--tasks", type=_csv, help="comma-separated task names or YAML paths (default: the preset's)")
    runner.add_argument("--compressors", type=_compressor_list,
                        help="comma-separated compressors, each 'name' or 'name:key=value,...', or a pipeline of them "
                             "joined by '+' ('distill:layers=3+heads:ffn=0.5+dynamic_int8': each stage applied to the "
                             "previous stage's model) (default: the "
                             "preset's: " + "; ".join(f"{p.name}: {','.join(p.compressors)}" for p in PRESETS.values())
                             + "; showcase: the baseline and dynamic_int8, with reduce_range=false on a CPU with "
                               "VNNI); see 'benchsuite list compressors'")
    runner.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS),
                        help=f"data budget and default tasks (default: {DEFAULT_PRESET})")
    runner.add_argument("--max-train", type=int, help="cap training rows per task (sampled with the seed)")
    runner.add_argument("--max-eval", type=int, help="cap evaluation rows per task (sampled with the seed)")
    runner.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="where records are written, one JSON per cell (default: results)")
    runner.add_argument("--cache-dir", type=Path,
                        help=f"fine-tuned baselines and teacher outputs (default: ${CACHE_ENV}, else "
                             f"~/.cache/benchsuite)")
    runner.add_argument("--seed", type=int, default=42,
                        help="seeds data sampling, fine-tuning and compression; another seed is another cell "
                             "(default: 42)")
    runner.add_argument("--threads", type=int, help="torch threads (default: every core)")
    runner.add_argument("--force", action="store_true", help="redo cells that already have a record")
    runner.add_argument("--cell-timeout", type=float, metavar="SECONDS",
                        help="fail a cell (compress, evaluate, measure) that runs longer; the run goes on")
    runner.add_argument("--executor", choices=["serial", "ray"], default="serial",
                        help="serial: every cell in this process, one after another (default); ray: each cell a "
                             "Ray task reserving --threads CPUs, on a local Ray instance or --ray-address "
                             "(pip install -e \".[ray]\"); the same records either way")
    runner.add_argument("--ray-address", metavar="ADDRESS",
                        help="the Ray cluster to run on ('auto', or the address 'ray start --head' printed); "
                             "default: start a local instance on this machine's cores")

    optimiser = sub.add_parser(
        "optimise", help="search pipelines for the fastest (or smallest) model that keeps --min-retention, within "
                         "a time budget; writes every candidate as a record and reports/optimise.md",
        description="For each task: an Optuna study (multi-objective TPE, the bound as a constraint) proposes "
                    "pipelines of the compressors that declare a search_space; poor candidates are stopped early "
                    "on a slice of the evaluation split; the rest are scored in full and measured like any cell. "
                    "Rerun with the same settings (and a larger budget) to continue the same study.")
    optimiser.add_argument("--tasks", type=_csv, help="comma-separated task names or YAML paths (default: the "
                                                        "preset's)")
    optimiser.add_argument("--min-retention", type=float, required=True, metavar="FRACTION",
                           help="the bound: the fraction of the baseline's score to keep on the full evaluation "
                                "split (0.99 keeps 99%%)")
    optimiser.add_argument("--objective", choices=["speed", "size"], default="speed",
                           help="what to maximise within the bound: speed (batch-32 speedup over the baseline, "
                                "default) or size (baseline file size over the model's)")
    optimiser.add_argument("--budget-minutes", type=float, default=60.0,
                           help="wall-clock budget for all tasks together, shared equally (default: 60); a "
                                "candidate still running when it ends is stopped and recorded as over_budget")
    optimiser.add_argument("--compressors", type=_csv,
                           help="the compressors to build pipelines from (names; default: every available "
                                "compressor that declares a search_space, see 'benchsuite describe NAME')")
    optimiser.add_argument("--max-stages", type=int, default=3,
                           help="most stages in a pipeline: up to this many minus one that training can continue "
                                "from, then one final stage such as a quantiser (default: 3)")
    optimiser.add_argument("--slice", type=int, default=256, metavar="EXAMPLES",
                           help="evaluation examples (seeded sample) on which candidates and pipeline prefixes are "
                                "checked before the full evaluation; stopped when the upper end of their paired "
                                "95%% retention interval is below the bound (default: 256)")
    optimiser.add_argument("--max-candidates", type=int,
                           help="stop a task's search after this many new candidates (default: only the budget)")
    optimiser.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS),
                           help=f"data budget and default tasks (default: {DEFAULT_PRESET})")
    optimiser.add_argument("--model", help="Hub id or local folder (default: all-MiniLM-L6-v2)")
    optimiser.add_argument("--seed", type=int, default=42,
                           help="seeds data, fine-tuning, compression, the slice and the sampler (default: 42)")
    optimiser.add_argument("--threads", type=int, help="torch threads (default: every core)")
    optimiser.add_argument("--results-dir", type=Path, default=Path("results"),
                           help="where records and study files are written (default: results)")
    optimiser.add_argument("--cache-dir", type=Path,
                           help=f"fine-tuned baselines, teacher outputs and pipeline prefixes (default: "
                                f"${CACHE_ENV}, else ~/.cache/benchsuite)")
    optimiser.add_argument("--out", type=Path, default=Path("reports"),
                           help="where reports/optimise.md and its plots are written (default: reports)")

    reporter = sub.add_parser("report", help="write reports/<preset>.md, its plots and reports/summary.csv from the "
                                             "records")
    reporter.add_argument("--results-dir", type=Path, default=Path("results"),
                          help="the records to report (default: results)")
    reporter.add_argument("--out", type=Path, default=Path("reports"), help="output folder (default: reports)")

    exporter = sub.add_parser("export", help="recompute a record's compressed model and save it, with a model card, "
                                             "to load elsewhere")
    exporter.add_argument("record", type=Path, help="a record file under results/ (status ok)")
    exporter.add_argument("--out", type=Path, required=True,
                          help="the folder to write (the model in its compressor's format, its tokenizer, README.md)")
    exporter.add_argument("--cache-dir", type=Path,
                          help=f"where the fine-tuned baseline and pipeline prefixes are cached (default: "
                               f"${CACHE_ENV}, else ~/.cache/benchsuite)")
    exporter.add_argument("--model", help="the checkpoint the record was computed from (default: the record's, when it "
                                          "is the reference model)")
    exporter.add_argument("--threads", type=int, help="torch threads (default: every core)")
    exporter.add_argument("--force", action="store_true", help="replace --out if it exists")

    upgrader = sub.add_parser("upgrade", help="rewrite older records in the current schema, under their cell-key names")
    upgrader.add_argument("--results-dir", type=Path, default=Path("results"),
                          help="the records to upgrade in place (default: results)")
    return parser


def _version() -> str:
    from benchsuite.records import _version as of  # noqa: PLC0415 (the version records hold)

    return f"benchsuite {of('benchsuite')} (torch {of('torch')}, transformers {of('transformers')})"


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                            format="%(levelname)s %(name)s: %(message)s")
        _quiet_libraries(args.verbose)
        return _dispatch(args)
    except UsageError as exc:
        print(f"benchsuite: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("benchsuite: interrupted; finished cells are saved, rerun the same command to resume",
              file=sys.stderr)
        return 130


def _quiet_libraries(verbose: bool) -> None:
    """Keep our own progress bars and messages readable: the libraries' load reports are noise here."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if verbose:
        return
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "list":
        return _list(args.what)
    if args.command == "describe":
        from benchsuite.compressors.describe import describe

        print(describe(args.name))
        return 0
    if args.command == "report":
        from benchsuite.report import write_reports

        written = write_reports(args.results_dir, args.out)
        for path in written:
            print(path)
        return 0
    if args.command == "upgrade":
        return _upgrade(args.results_dir)
    if args.command == "export":
        return _export(args)
    if args.command == "optimise":
        return _optimise(args)
    return _run(args)


def _optimise(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from benchsuite.cache import default_cache_dir
    from benchsuite.optimise.search import OptimiseOptions, describe, optimise
    from benchsuite.presets import get_preset
    from benchsuite.report.optimise import write_optimise_report
    from benchsuite.runner import RunOptions

    _set_threads(args.threads)
    if args.max_stages is not None and args.max_stages < 1:
        raise UsageError(f"--max-stages must be >= 1, got {args.max_stages}")
    preset = get_preset(args.preset)
    opts = OptimiseOptions(
        run=RunOptions(tasks=args.tasks or preset.tasks, compressors=(), preset=preset,
                       results_dir=args.results_dir, cache_dir=args.cache_dir or default_cache_dir(),
                       model=args.model, seed=args.seed),
        min_retention=args.min_retention, objective=args.objective, budget_seconds=60 * args.budget_minutes,
        max_stages=args.max_stages, slice_examples=args.slice, pool=args.compressors,
        max_candidates=args.max_candidates)
    summary = optimise(opts, progress=tqdm)
    for outcome in summary.outcomes:
        if outcome.study is None:
            print(f"{outcome.task}: not searched ({outcome.stopped_because})")
            continue
        run = outcome.study.runs[-1]
        print(f"{outcome.task}: {outcome.tried} new candidate(s) in {run.seconds / 60:.1f} of "
              f"{run.budget_seconds / 60:.1f} min ({run.stopped_because}); study {outcome.study_file}")
        if outcome.chosen is None:
            print(f"  no candidate keeps {100 * args.min_retention:g}% on the full evaluation split yet")
        else:
            print(f"  chosen: {outcome.chosen.spec}: {describe(outcome.chosen)}")
    for path in write_optimise_report(args.results_dir, args.out):
        print(path)
    print(f"searched for {summary.seconds / 60:.1f} min of a {args.budget_minutes:g}-min budget")
    return 0


def _export(args: argparse.Namespace) -> int:
    from benchsuite.cache import default_cache_dir
    from benchsuite.export import export

    _set_threads(args.threads)
    summary = export(args.record, args.out, cache_dir=args.cache_dir or default_cache_dir(), model=args.model,
                     force=args.force)
    print(f"exported to {summary.folder}: {summary.same_predictions} of {summary.rows} predictions equal the "
          f"record's" + ("" if summary.max_logit_difference is None
                         else f" (largest logit difference {summary.max_logit_difference:.2g})")
          + f"; scores {summary.scores}")
    if not summary.reproduces:
        print("benchsuite: warning: the exported model does not reproduce the record exactly (another machine's "
              "kernels or thread count); its model card shows both", file=sys.stderr)
    return 0


def _set_threads(threads: int | None) -> None:
    """``--threads``: torch's thread count for this process (None: leave torch's default, every core)."""
    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def _upgrade(results_dir: Path) -> int:
    from benchsuite.compressors.registry import get_compressor_class, registered
    from benchsuite.records import SCHEMA_VERSION, upgrade_files

    if not results_dir.is_dir():
        raise UsageError(f"results folder {results_dir} does not exist")
    names = set(registered())

    def defaults(name: str) -> dict | None:  # the installed config's JSON, to recover ``changed``
        # through JSON, as the record holds it: a tuple default is the list a record stores
        return json.loads(json.dumps(get_compressor_class(name)().config.to_json())) if name in names else None

    def family_of(name: str) -> str | None:
        return get_compressor_class(name).family if name in names else None

    moved = upgrade_files(results_dir, defaults=defaults, family_of=family_of)
    for old, new in moved:
        print(f"{old} -> {new.name}")
    print(f"{len(moved)} records rewritten in schema {SCHEMA_VERSION} (older schema, or no compressor family)")
    return 0


def _list(what: str) -> int:
    if what == "tasks":
        from benchsuite.data import local_availability
        from benchsuite.tasks import load_task, task_files

        for name in task_files():
            spec = load_task(name)
            where = local_availability(spec)
            source = f"{spec.dataset.repo_id}/{spec.dataset.config}"
            print(f"{name:16} {spec.kind:21} {source:28} primary={spec.primary_metric:21} "
                  f"{'[' + where + ']' if where else 'offline'}")
        return 0
    from benchsuite.compressors.describe import options
    from benchsuite.compressors.registry import get_compressor_class, registered

    for name, entry in registered().items():
        try:
            cls = get_compressor_class(name)
            needs = ",".join(sorted(cls.NEEDS)) or "-"
            names = ",".join(d.name for d in options(cls.config_class)) or "-"
            reason = cls.unavailable_reason()
            state = f" UNAVAILABLE: {reason}" if reason else ""
            print(f"{name:21} {cls.family:13} {entry.origin:24} needs={needs} options={names}{state}")
        except UsageError as exc:  # a broken plugin is listed with its error, the others still are
            print(f"{name:21} {'?':13} {entry.origin:24} BROKEN: {exc}")
    print("(each option's type, default and meaning: benchsuite describe NAME; chain compressors into a pipeline "
          "with '+': distill:layers=3+dynamic_int8)")
    return 0


def _run(args: argparse.Namespace) -> int:
    from benchsuite.cache import default_cache_dir
    from benchsuite.presets import get_preset
    from benchsuite.runner import RunOptions, run

    _set_threads(args.threads)
    preset = get_preset(args.preset).limited(max_train=args.max_train, max_eval=args.max_eval)
    opts = RunOptions(
        tasks=args.tasks or preset.tasks,
        compressors=args.compressors or preset.compressors,
        preset=preset,
        results_dir=args.results_dir,
        cache_dir=args.cache_dir or default_cache_dir(),
        model=args.model,
        seed=args.seed,
        force=args.force,
        cell_timeout=args.cell_timeout,
    )
    if args.cell_timeout is not None and args.cell_timeout <= 0:
        raise UsageError(f"--cell-timeout must be > 0 seconds, got {args.cell_timeout}")
    if args.ray_address is not None and args.executor != "ray":
        raise UsageError("--ray-address needs --executor ray")
    if args.executor == "ray":
        from benchsuite.ray_executor import RayOptions, run_on_ray

        summary = run_on_ray(opts, RayOptions(address=args.ray_address, cpus_per_cell=args.threads))
    else:
        summary = run(opts)
    busy = f", {len(summary.busy)} being computed by another run" if summary.busy else ""
    print(f"{len(summary.written)} written, {len(summary.skipped)} already done, {len(summary.failed)} failed{busy} "
          f"(records under {args.results_dir})")
    for path in summary.failed:
        print(f"  failed: {path}", file=sys.stderr)
    return EXIT_FAILED_CELLS if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
