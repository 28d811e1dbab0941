"""Saving and reloading models whose modules a compressor replaced.

A quantised model is not a ``save_pretrained`` checkpoint: its layers are of other
classes and its weights other dtypes. Such a compressor says how to turn the fine-tuned
architecture into its own (``restructure``: module surgery only, no data), and this base
saves ``config.json``, ``compressor.json`` (the compressor's name, its config and the
``layout``: any structural choice ``compress`` made from data, such as which layers it
split) and the state dict in the method's format. ``load`` builds the architecture from
``config.json``, restructures it with the saved config and layout and loads the state
dict strictly, so a reloaded model is the saved one, tensor for tensor.

A tensor that several names share (one layer used at several depths, a tied embedding) is
written once, under its first name, since safetensors refuses aliases; ``restructure`` must
re-tie the skeleton the same way, and loading fills the other names from the first. In torch.ao's
format a shared module is found by the module itself (its quantised weights are unpacked anew at
each name): its keys under later names are left out of ``model.pt`` and filled the same way.

The skeleton is first built in fp32 (transformers' ``from_config``), so loading briefly
holds an fp32 copy: the memory record's loading peak includes it.
"""

from __future__ import annotations

import copy
import json
import warnings
from abc import abstractmethod
from pathlib import Path
from typing import ClassVar

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from benchsuite.compressors import sparse_storage
from benchsuite.compressors.base import CompressionResult, Compressor, save_tokenizer
from benchsuite.compressors.shared_modules import alias_keys
from benchsuite.errors import UsageError
from benchsuite.fileio import write_text_atomic
from benchsuite.models import auto_class_for

SPEC_FILE = "compressor.json"
SPARSE_FILE = "model.sparse.safetensors"
STATE_FORMATS = {
    "safetensors": "safetensors state dict",
    "sparse": f"safetensors state dict, mostly-zero tensors as bitmask + nonzero values ({SPARSE_FILE})",
    "torch": "torch.ao quantized state dict (torch.save; loaded with weights_only=True)",
}


class RebuiltCompressor(Compressor):
    #: ``"safetensors"`` for plain tensors; ``"sparse"`` for the same with mostly-zero tensors packed
    #: (:mod:`~benchsuite.compressors.sparse_storage`); ``"torch"`` for torch.ao quantized state dicts (packed
    #: qtensors that safetensors cannot hold), written with ``torch.save`` and read with ``weights_only=True``.
    state_format: ClassVar[str] = "safetensors"

    @abstractmethod
    def restructure(self, model: torch.nn.Module, layout: dict) -> torch.nn.Module:
        """The architecture of a compressed model, built from the fp32 one and ``layout`` without any data."""

    @property
    def save_format(self) -> str:  # type: ignore[override]
        return STATE_FORMATS[self.state_format] + " + config.json"

    def save(self, result: CompressionResult, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_config(result.model, folder)
        write_text_atomic(folder / SPEC_FILE, json.dumps({"compressor": self.name, **self.config.to_json(),
                                                         "layout": result.layout or {}},
                                                        indent=2, sort_keys=True) + "\n")
        save_state(result.model.state_dict(), folder, self.state_format, alias_keys(result.model))
        save_tokenizer(result, folder)

    @classmethod
    def load(cls, folder: Path) -> torch.nn.Module:
        folder = Path(folder)
        spec = json.loads((folder / SPEC_FILE).read_text())
        if spec.get("compressor") != cls.name or spec.get("version") != cls.config_class.version:
            raise UsageError(f"{folder} was saved by {spec.get('compressor')!r} config version {spec.get('version')}, "
                             f"not {cls.name!r} version {cls.config_class.version}: re-run the cell with --force")
        compressor = cls(cls.config_class.from_params(spec["params"]))
        import transformers  # noqa: PLC0415

        config = transformers.AutoConfig.from_pretrained(folder)
        skeleton = auto_class_for(folder).from_config(config).eval()
        model = compressor.restructure(skeleton, spec.get("layout") or {})
        load_state(model, folder, cls.state_format)
        return model.eval()


def save_config(model: torch.nn.Module, folder: Path) -> None:
    """``config.json`` of ``model``, naming its head class (which loading rebuilds)."""
    config = copy.deepcopy(model.config)
    config.architectures = [type(model).__name__]
    config.save_pretrained(folder)


def save_state(state: dict[str, torch.Tensor], folder: Path, state_format: str,
               shared: dict[str, str] | None = None) -> None:
    """The state dict as ``model.pt`` (torch.ao qtensors; the keys of ``shared``, a model's
    :func:`~benchsuite.compressors.shared_modules.alias_keys`, left out), ``model.safetensors`` (shared
    tensors once) or, ``"sparse"``, :data:`SPARSE_FILE` (the same with its mostly-zero tensors packed)."""
    if state_format == "torch":
        kept = copy.copy(state)  # an OrderedDict's copy keeps its _metadata (module versions, read on loading)
        for key in shared or {}:
            kept.pop(key, None)
        torch.save(kept, folder / "model.pt")
        return
    aliases = _aliases(state)
    tensors = {k: v.contiguous() for k, v in state.items() if k not in aliases}
    if state_format == "sparse":
        packed, metadata = sparse_storage.pack(tensors)
        save_file(packed, str(folder / SPARSE_FILE), metadata=metadata or None)
    else:
        save_file(tensors, str(folder / "model.safetensors"))


def read_state(folder: Path, state_format: str) -> dict[str, torch.Tensor]:
    """The tensors :func:`save_state` wrote, as written (a shared tensor once, under its first name)."""
    if state_format == "torch":
        with warnings.catch_warnings():  # torch.load's own notice about TypedStorage, raised by qtensors
            warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated")
            return torch.load(folder / "model.pt", weights_only=True)
    if state_format == "sparse":
        with safe_open(str(folder / SPARSE_FILE), framework="pt") as f:
            return sparse_storage.unpack({k: f.get_tensor(k) for k in f.keys()}, f.metadata())  # noqa: SIM118
    return load_file(str(folder / "model.safetensors"))


def load_state(model: torch.nn.Module, folder: Path, state_format: str) -> None:
    """Load :func:`save_state`'s file into ``model``, strictly: every tensor, of the skeleton's shapes."""
    state = read_state(folder, state_format)
    shared = alias_keys(model) if state_format == "torch" else _aliases(model.state_dict())
    for name, first in shared.items():
        if name not in state and first in state:  # a shared tensor, written once under its first name
            state[name] = state[first]
    model.load_state_dict(state, strict=True)


def _aliases(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Each name whose tensor is exactly an earlier name's tensor (same memory, shape and strides) -> that name."""
    first: dict[tuple, str] = {}
    aliases: dict[str, str] = {}
    for name, tensor in state.items():
        if tensor.numel() == 0:  # empty tensors have no memory to share
            continue
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride(),
               tensor.dtype)
        if key in first:
            aliases[name] = first[key]
        else:
            first[key] = name
    return aliases
