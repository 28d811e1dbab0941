"""The ``benchsuite`` command: ``list``, ``run``, ``report`` and ``upgrade``.

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
        continues_list = bool(specs) and (specs[-1].count("[") > specs[-1].count("]")
                                          or re.fullmatch(r"-?\d+\]?", piece) is not None)
        if ("=" in piece and ":" not in piece) or continues_list:
            if not specs:
                raise argparse.ArgumentTypeError(f"option {piece!r} comes before any compressor name")
            specs[-1] += f",{piece}"
        else:
            specs.append(piece)
    return tuple(specs)


def build_parser() -> argparse.ArgumentParser:
    from benchsuite.presets import DEFAULT_PRESET, PRESETS

    parser = _Parser(prog="benchsuite", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    lister = sub.add_parser("list", help="list tasks or compressors")
    lister.add_argument("what", choices=["tasks", "compressors"])

    runner = sub.add_parser("run", help="fine-tune baselines, compress, score, and write records")
    runner.add_argument("--model", help="Hub id or local folder (default: all-MiniLM-L6-v2)")
    runner.add_argument("--tasks", type=_csv, help="comma-separated task names or YAML paths (default: the preset's)")
    runner.add_argument("--compressors", type=_compressor_list, default=("baseline",),
                        help="comma-separated compressors, each 'name' or 'name:key=value,...' (default: baseline)")
    runner.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS),
                        help=f"data budget and default tasks (default: {DEFAULT_PRESET})")
    runner.add_argument("--max-train", type=int, help="cap training rows per task (sampled with the seed)")
    runner.add_argument("--max-eval", type=int, help="cap evaluation rows per task (sampled with the seed)")
    runner.add_argument("--results-dir", type=Path, default=Path("results"))
    runner.add_argument("--cache-dir", type=Path, help="fine-tuned model cache (default: ~/.cache/benchsuite)")
    runner.add_argument("--seed", type=int, default=42)
    runner.add_argument("--threads", type=int, help="torch threads (default: every core)")
    runner.add_argument("--force", action="store_true", help="redo cells that already have a record")
    runner.add_argument("--cell-timeout", type=float, metavar="SECONDS",
                        help="fail a cell (compress, evaluate, measure) that runs longer; the run goes on")

    reporter = sub.add_parser("report", help="regenerate report tables from records")
    reporter.add_argument("--results-dir", type=Path, default=Path("results"))
    reporter.add_argument("--out", type=Path, default=Path("reports"))

    upgrader = sub.add_parser("upgrade", help="rewrite older records in the current schema, under their cell-key names")
    upgrader.add_argument("--results-dir", type=Path, default=Path("results"))
    return parser


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
    if args.command == "report":
        from benchsuite.report import write_reports

        written = write_reports(args.results_dir, args.out)
        for path in written:
            print(path)
        return 0
    if args.command == "upgrade":
        return _upgrade(args.results_dir)
    return _run(args)


def _upgrade(results_dir: Path) -> int:
    from benchsuite.compressors.registry import get_compressor_class, registered
    from benchsuite.records import SCHEMA_VERSION, upgrade_files

    if not results_dir.is_dir():
        raise UsageError(f"results folder {results_dir} does not exist")
    names = set(registered())

    def defaults(name: str) -> dict | None:  # the installed config's JSON, to recover ``changed``
        # through JSON, as the record holds it: a tuple default is the list a record stores
        return json.loads(json.dumps(get_compressor_class(name)().config.to_json())) if name in names else None

    moved = upgrade_files(results_dir, defaults=defaults)
    for old, new in moved:
        print(f"{old} -> {new.name}")
    print(f"{len(moved)} records rewritten in schema {SCHEMA_VERSION}")
    return 0


def _list(what: str) -> int:
    if what == "tasks":
        from benchsuite.tasks import load_task, task_files

        for name in task_files():
            spec = load_task(name)
            print(f"{name:18} {spec.kind:22} {spec.dataset.repo_id}/{spec.dataset.config}  "
                  f"primary={spec.primary_metric}")
        return 0
    from benchsuite.compressors.registry import get_compressor_class, registered

    for name, entry in registered().items():
        try:
            cls = get_compressor_class(name)
            needs = ",".join(sorted(cls.NEEDS)) or "-"
            print(f"{name:18} {entry.origin:28} needs={needs}")
        except UsageError as exc:  # a broken plugin is listed with its error, the others still are
            print(f"{name:18} {entry.origin:28} BROKEN: {exc}")
    return 0


def _run(args: argparse.Namespace) -> int:
    import torch

    from benchsuite.cache import default_cache_dir
    from benchsuite.presets import get_preset
    from benchsuite.runner import RunOptions, run

    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    preset = get_preset(args.preset).limited(max_train=args.max_train, max_eval=args.max_eval)
    opts = RunOptions(
        tasks=args.tasks or preset.tasks,
        compressors=args.compressors,
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
    summary = run(opts)
    busy = f", {len(summary.busy)} being computed by another run" if summary.busy else ""
    print(f"{len(summary.written)} written, {len(summary.skipped)} already done, {len(summary.failed)} failed{busy} "
          f"(records under {args.results_dir})")
    for path in summary.failed:
        print(f"  failed: {path}", file=sys.stderr)
    return EXIT_FAILED_CELLS if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
