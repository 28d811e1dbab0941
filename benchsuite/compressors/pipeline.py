"""Pipelines: several compressors applied in order, each to the previous stage's model.

``--compressors "distill:layers=3+heads:ffn=0.5+dynamic_int8"`` is one cell: a 3-layer student,
then pruned, then quantised. Every stage that trains recovers against the original fine-tuned
teacher (its context is the cell's: the same teacher and teacher outputs), not against the
previous stage. Size, memory and speed are measured on the final model; the record holds every
stage's config, layout and recovery, and the pipeline's own config hash.

Rules, checked when the pipeline is built (before any work):

* a stage whose model cannot be trained further or is not a PyTorch model (``trainable_output``
  false: int8 kernels, ONNX, a half-precision cast) can only be last;
* every stage but the last must be replayable on a skeleton, so that the final model reloads:
  a :class:`~benchsuite.compressors.rebuild.RebuiltCompressor` (it declares ``restructure``) or a
  compressor that keeps the default ``save_pretrained`` format (weights only);
* a pipeline of one stage is that compressor itself: the same cell, key and record.

Saving: when the last stage has a format of its own that holds the whole model (ONNX), it saves
the model; otherwise the folder holds ``config.json`` (the final architecture),
``pipeline.json`` (the teacher's architecture and each stage's config and layout) and the state
dict. :meth:`Pipeline.load` builds the teacher's architecture, replays each stage's
``restructure`` in order, and loads the state dict strictly.

Sharing survives the stages after it: a module that several names shared before a stage is put
back at all of them after it (:mod:`~benchsuite.compressors.shared_modules`), or the stage is
refused where its copies differ.

Prefix reuse: the model after each trainable prefix (``distill+heads`` of
``distill+heads+dynamic_int8``) is cached under the key of that prefix and the baseline it started
from, so ``distill+heads+dynamic_int8`` and ``distill+heads+ort_int8`` train the student and prune it
once. The global RNG is seeded with the cell's seed before every stage, so a stage computes the
same whether its prefix was trained in this cell or loaded from the cache.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchsuite import cache
from benchsuite.compressors.base import (
    CompressionContext,
    CompressionResult,
    Compressor,
    CompressorConfig,
    as_result,
    save_tokenizer,
)
from benchsuite.compressors.rebuild import (
    SPARSE_FILE,
    STATE_FORMATS,
    RebuiltCompressor,
    load_state,
    save_config,
    save_state,
)
from benchsuite.compressors.shared_modules import alias_keys, keep_shared, module_aliases
from benchsuite.errors import UsageError
from benchsuite.fileio import write_text_atomic

SEPARATOR = "+"
PIPELINE_FILE = "pipeline.json"
PREFIX_KIND = "prefix"
PREFIX_CODE_VERSION = 1  # bump when a prefix's cached model would be computed differently
log = logging.getLogger("benchsuite.pipeline")


@dataclass(frozen=True)
class PipelineConfig(CompressorConfig):
    """The stages, in order, each as ``{"name", "config"}`` (the stage config's own JSON)."""

    stages: tuple[dict[str, Any], ...] = ()

    def validate(self) -> None:
        if len(self.stages) < 2:
            raise ValueError(f"a pipeline has at least two stages, got {len(self.stages)}")


def stage_label(stage: Compressor) -> str:
    """``name`` or ``name:key=value,...`` with the options that differ from the defaults, as typed on the
    command line (lists comma-separated)."""
    changed = stage.describe()["changed"]

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, list | tuple):
            return ",".join(map(str, value))
        return "null" if value is None else str(value)

    options = ",".join(f"{k}={text(v)}" for k, v in sorted(changed.items()))
    return f"{stage.name}:{options}" if options else stage.name


def replayable(stage: Compressor) -> bool:
    """Can a skeleton be brought to this stage's architecture without data (for reloading a later stage)?"""
    return isinstance(stage, RebuiltCompressor) or type(stage).save is Compressor.save


class Pipeline(Compressor):
    family = "pipeline"
    name = "pipeline"  # each instance is named by its stages: distill+heads+dynamic_int8
    config_class = PipelineConfig

    def __init__(self, stages: list[Compressor]):
        if len(stages) < 2:
            raise UsageError("a pipeline needs at least two stages (one stage is that compressor's own cell)")
        spec = SEPARATOR.join(stage_label(s) for s in stages)
        for stage, after in zip(stages, stages[1:], strict=False):
            if isinstance(stage, Pipeline) or isinstance(after, Pipeline):
                raise UsageError(f"pipeline {spec!r}: a stage cannot itself be a pipeline")
            if not stage.trainable_output:
                raise UsageError(f"pipeline {spec!r}: {stage.name} leaves a model that is not an fp32 PyTorch "
                                 f"model (compute {stage.compute}, saved as {stage.save_format}), so {after.name} "
                                 f"cannot follow it; put {stage.name} last")
            if not replayable(stage):
                raise UsageError(f"pipeline {spec!r}: {stage.name} saves in a format of its own and declares no "
                                 f"restructure, so a model it changed cannot be rebuilt for the stages after it; "
                                 f"put it last, or make it a RebuiltCompressor")
        super().__init__(PipelineConfig(stages=tuple({"name": s.name, "config": s.config.to_json()} for s in stages)))
        self.stages = list(stages)
        self.name = SEPARATOR.join(s.name for s in stages)
        self.spec = spec
        self.NEEDS = frozenset().union(*(s.NEEDS for s in stages))
        self.compute = stages[-1].compute
        self.trainable_output = stages[-1].trainable_output
        kinds = [s.supported_kinds for s in stages if s.supported_kinds is not None]
        self.supported_kinds = frozenset.intersection(*kinds) if kinds else None
        last = stages[-1]
        self._own_format = not replayable(last)  # the last stage's file holds the whole model (ONNX)
        if self._own_format:
            self.save_format = f"{last.save_format} (the last stage's format) + {PIPELINE_FILE}"
        else:
            self.save_format = (STATE_FORMATS[_state_format(stages)]
                                + f" + config.json + {PIPELINE_FILE} (the stages replayed on load)")

    def refusal(self) -> str | None:
        return next((f"{s.name}: {r}" for s in self.stages if (r := s.refusal()) is not None), None)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config.to_json(), "config_hash": self.config.config_hash(),
                "changed": {"pipeline": self.spec}}

    def stage_infos(self) -> list[dict[str, Any]]:
        """What the record says of each stage before it runs: name, config, hash, changed options, family."""
        return [{"name": s.name, "config": s.config.to_json(), "config_hash": s.config.config_hash(),
                 "changed": s.describe()["changed"], "family": s.family, "compute": s.compute} for s in self.stages]

    # --- compress -------------------------------------------------------------------------------------------

    def compress(self, model: torch.nn.Module, *, context: CompressionContext) -> CompressionResult:
        base_config = model.config.to_dict()  # the teacher's architecture, from which loading replays the stages
        head_class = type(model)
        done: list[dict[str, Any]] = []  # per stage: layout, recovery, seconds, reused_from_cache
        tokenizer = None
        prefixes = context.prefix_cache
        start = 0
        if prefixes is not None:
            for count in range(len(self.stages) - 1, 0, -1):  # the longest cached prefix of trainable stages
                found = prefixes.get(self.stages[:count])
                if found is not None:
                    model = replay(head_class, base_config, found["stages"], self.stages[:count], found["path"])
                    done = [{**stage, "reused_from_cache": True} for stage in found["stages"]]
                    start = count
                    log.info("%s: reusing the cached model of its first %d stage(s) (%s)", self.name, count,
                             SEPARATOR.join(s.name for s in self.stages[:count]))
                    if context.on_stage is not None:
                        context.on_stage(self.stages[:count], model)
                    break
        for index in range(start, len(self.stages)):
            stage = self.stages[index]
            torch.manual_seed(context.seed)  # as for a cell of this stage alone, whatever came before it
            began = time.perf_counter()
            aliases = module_aliases(model)
            result = as_result(stage.compress(model, context=context.restricted(stage.NEEDS)), stage)
            model, tokenizer = keep_shared(result.model, aliases, stage), result.tokenizer or tokenizer
            done.append({"layout": result.layout, "recovery": result.recovery,
                         "seconds": round(time.perf_counter() - began, 3), "reused_from_cache": False})
            # a cached prefix holds weights only: none after a stage that changed the tokenizer
            if prefixes is not None and index < len(self.stages) - 1 and tokenizer is None:
                prefixes.put(self.stages[: index + 1], model, base_config, done)
            if context.on_stage is not None and index < len(self.stages) - 1 and tokenizer is None:
                context.on_stage(self.stages[: index + 1], model)
        layout = {"base_config": base_config,
                  "stages": [{"name": s.name, "config": s.config.to_json(), "layout": d["layout"]}
                             for s, d in zip(self.stages, done, strict=True)]}
        recovery = {"stages": [{"name": s.name, "recovery": d["recovery"], "seconds": d["seconds"],
                                "reused_from_cache": d["reused_from_cache"]}
                               for s, d in zip(self.stages, done, strict=True)]}
        return CompressionResult(model, layout=layout, recovery=recovery, tokenizer=tokenizer)

    # --- save and load ----------------------------------------------------------------------------------------

    def save(self, result: CompressionResult, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        layout = result.layout or {}
        if self._own_format:
            last = layout["stages"][-1]["layout"] if layout.get("stages") else None
            self.stages[-1].save(CompressionResult(result.model, layout=last, tokenizer=result.tokenizer), folder)
        else:
            check_replay(type(result.model), layout["base_config"], layout["stages"], self.stages, result.model)
            save_config(result.model, folder)
            save_state(result.model.state_dict(), folder, _state_format(self.stages), alias_keys(result.model))
            save_tokenizer(result, folder)
        write_text_atomic(folder / PIPELINE_FILE, json.dumps(
            {"pipeline": self.spec, "format": "last_stage" if self._own_format else "replay",
             **layout}, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, folder: Path) -> torch.nn.Module:
        folder = Path(folder)
        saved = json.loads((folder / PIPELINE_FILE).read_text())
        stages = [stage_from_json(s) for s in saved["stages"]]
        if saved["format"] == "last_stage":
            return type(stages[-1]).load(folder)
        from benchsuite.models import auto_class_for  # noqa: PLC0415

        return replay(auto_class_for(folder), saved["base_config"], saved["stages"], stages, folder)


def stage_from_json(stage: dict[str, Any]) -> Compressor:
    """A stage as a pipeline's JSON names it: its registered class with the saved config."""
    from benchsuite.compressors.registry import get_compressor_class  # noqa: PLC0415

    cls = get_compressor_class(stage["name"])
    if stage["config"].get("version") != cls.config_class.version:
        raise UsageError(f"stage {stage['name']} was saved with config version {stage['config'].get('version')}, "
                         f"this install has version {cls.config_class.version}: re-run the cell with --force")
    return cls(cls.config_class.from_params(stage["config"]["params"]))


def _state_format(stages: list[Compressor]) -> str:
    """torch.ao's format if a stage quantised with it; else sparse storage if a stage stores sparse (its zeros
    survive the later fp32 stages that can follow it); else plain safetensors."""
    formats = {getattr(s, "state_format", "safetensors") for s in stages}
    return "torch" if "torch" in formats else "sparse" if "sparse" in formats else "safetensors"


def skeleton(head_class: type, base_config: dict[str, Any], layouts: list[dict[str, Any]],
             stages: list[Compressor]) -> torch.nn.Module:
    """The teacher's architecture with each stage's structural change replayed, without data."""
    from transformers import CONFIG_MAPPING  # noqa: PLC0415

    config = CONFIG_MAPPING[base_config["model_type"]].from_dict(base_config)
    # an Auto class (loading from a folder) builds with from_config, a model class (in memory) with _from_config
    build = head_class.from_config if hasattr(head_class, "from_config") else head_class._from_config
    model = build(config).eval()
    for stage, saved in zip(stages, layouts, strict=True):
        if isinstance(stage, RebuiltCompressor):
            aliases = module_aliases(model)
            model = keep_shared(stage.restructure(model, saved.get("layout") or {}), aliases, stage)
    return model.eval()


def replay(head_class: type, base_config: dict[str, Any], layouts: list[dict[str, Any]], stages: list[Compressor],
           folder: str | Path) -> torch.nn.Module:
    """Load a saved pipeline model (or prefix) from ``folder``: :func:`skeleton`, then its state dict."""
    model = skeleton(head_class, base_config, layouts, stages)
    load_state(model, Path(folder), _state_format(stages))
    return model.eval()


def check_replay(head_class: type, base_config: dict[str, Any], layouts: list[dict[str, Any]],
                 stages: list[Compressor], model: torch.nn.Module) -> None:
    """Refuse to save a model that replaying the stages would not rebuild (a stage changed the architecture
    without a ``restructure``), naming the first tensor that differs."""
    expected = _shapes(skeleton(head_class, base_config, layouts, stages).state_dict())
    actual = _shapes(model.state_dict())
    if expected != actual:
        names = sorted(set(expected) ^ set(actual)) or sorted(k for k in actual if expected[k] != actual[k])
        raise ValueError(f"pipeline {SEPARATOR.join(s.name for s in stages)}: replaying its stages on the "
                         f"teacher's architecture does not rebuild the model ({len(names)} tensor(s) differ, first "
                         f"{names[0]}): a stage changed the architecture without declaring restructure")


def _shapes(state: dict[str, Any]) -> dict[str, Any]:
    """Each entry's shape and dtype (a torch.ao state dict also holds dtypes and packed parameters)."""
    return {k: (tuple(v.shape), v.dtype) if isinstance(v, torch.Tensor) else type(v).__name__
            for k, v in state.items()}


class PrefixCache:
    """Models after a pipeline's trainable prefix, cached by the prefix's stages and the baseline they started
    from (:mod:`benchsuite.cache` entries of kind ``prefix``)."""

    def __init__(self, root: Path, *, baseline_key: str, seed: int, providers: dict[str, str]):
        self.root = Path(root)
        self.baseline_key = baseline_key
        self.seed = seed
        self.providers = providers  # stage name -> "<distribution> <version>"
        self.trained = 0  # prefixes computed and stored by this cache object (tests count them)

    def _inputs(self, stages: list[Compressor]) -> dict[str, Any]:
        return {"prefix_code_version": PREFIX_CODE_VERSION, "baseline": self.baseline_key, "seed": self.seed,
                "stages": [{"name": s.name, "config": s.config.to_json(), "provider": self.providers.get(s.name)}
                           for s in stages]}

    def key(self, stages: list[Compressor]) -> str:
        return cache.key_of(self._inputs(stages))

    def get(self, stages: list[Compressor]) -> dict[str, Any] | None:
        entry = cache.cached_entry(self.root, PREFIX_KIND, self.key(stages), payload=_payload(stages))
        return None if entry is None else {"path": entry["path"], "stages": entry["stats"]["stages"]}

    def put(self, stages: list[Compressor], model: torch.nn.Module, base_config: dict[str, Any],
            done: list[dict[str, Any]]) -> None:
        if not all(s.trainable_output and replayable(s) for s in stages):
            return
        layouts = [{"name": s.name, "config": s.config.to_json(), "layout": d["layout"]}
                   for s, d in zip(stages, done, strict=True)]
        check_replay(type(model), base_config, layouts, stages, model)

        def build(folder: Path) -> dict[str, Any]:
            save_state(model.state_dict(), folder, _state_format(stages), alias_keys(model))
            return {"stages": [{**layout, **{k: d[k] for k in ("recovery", "seconds")}}
                               for layout, d in zip(layouts, done, strict=True)]}

        cache.build_entry(self.root, PREFIX_KIND, self.key(stages), self._inputs(stages), build,
                          payload=_payload(stages))
        self.trained += 1


def _payload(stages: list[Compressor]) -> str:
    return {"torch": "model.pt", "sparse": SPARSE_FILE}.get(_state_format(stages), "model.safetensors")
