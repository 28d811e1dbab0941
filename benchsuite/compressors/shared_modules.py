"""Keeping a module shared when a later stage replaces modules.

A sharing stage can put one module object at several names: a whole layer at several depths
(``cross_layer``), or, with ``norms="own"``, only a layer's Linears, each depth keeping its own
layer object. A later stage that swaps modules by walking the tree (torch.ao's ``quantize_dynamic``,
the weight-only stages) visits the second kind once per parent and builds one new module for each:
the copies compute the same, but storage, footprint and file count them twice; a stage that swaps
by name (``linear_names`` lists a shared module once) replaces it at one name and leaves the old
one at the others. After each stage the pipeline puts the stage's module back at every name that
shared one before it, when its copies are the same type with equal state; a stage that observes
activations (static int8: each use's observer saw only its own inputs) or built copies that differ
is refused with the fix, since tying them would change what was calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from benchsuite.errors import UsageError
from benchsuite.quant.surgery import replace_modules


@dataclass(frozen=True)
class Alias:
    """One module object reached under several names, and the module holding each name (its parent)."""

    names: list[str]
    module: nn.Module
    parents: list[nn.Module]


def module_aliases(model: nn.Module) -> list[Alias]:
    """Each module object that appears under more than one name; the shortest names first."""
    found: dict[int, list[str]] = {}
    modules: dict[int, nn.Module] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        found.setdefault(id(module), []).append(name)
        modules[id(module)] = module
    groups = [Alias(names, modules[key], [_parent(model, name) for name in names])
              for key, names in found.items() if len(names) > 1]
    return sorted(groups, key=lambda alias: (alias.names[0].count("."), alias.names[0]))


def keep_shared(model: nn.Module, aliases: list[Alias], stage: Any) -> nn.Module:
    """Tie again, in place, each of ``aliases`` (taken before ``stage`` ran) that the stage split.

    Only names whose parent module is still the one it was count: a stage that rebuilt the model around
    them (a student whose layer 1 is the teacher's layer 2) reused the names for other modules. Where
    the stage replaced the module at some of those names and left the old one at the others (it walked
    the names once each), or built equal copies, every name gets the stage's module. A stage that
    observes activations (``observes_activations``) calibrated each use apart, so a split is refused.
    """
    for alias in aliases:
        present = [name for name, parent in zip(alias.names, alias.parents, strict=True)
                   if _find(model, name) is not None and _parent(model, name) is parent]
        if len(present) < 2:
            continue  # the stage removed or rebuilt these modules
        modules = [model.get_submodule(name) for name in present]
        new = [module for module in modules if module is not alias.module]
        if not new or all(module is new[0] for module in modules):
            continue  # untouched, or replaced once for every name
        if getattr(stage, "observes_activations", False) or any(
                type(module) is not type(new[0]) or not _same(module.state_dict(), new[0].state_dict())
                for module in new):
            raise UsageError(f"{stage.name} made {present[0]} and the other names of one shared module "
                             f"({', '.join(present[1:])}) into different modules, so they would no longer be "
                             f"shared; put {stage.name} before the sharing stage, or share whole layers "
                             "(norms=shared)")
        replace_modules(model, present, lambda _old, module=new[0]: module)
    return model


def alias_keys(model: nn.Module) -> dict[str, str]:
    """Each state-dict key reached through a shared module's later name -> the same key under its first name.

    torch.ao's quantised Linears unpack their weights anew for every ``state_dict`` call, so a file can
    only store a shared one once by dropping these keys (and loading fills them from the first)."""
    keys: dict[str, str] = {}
    for alias in module_aliases(model):
        first, *later = alias.names
        for key in alias.module.state_dict():
            keys.update({f"{name}.{key}": f"{first}.{key}" for name in later})
    return keys


def _parent(model: nn.Module, name: str) -> nn.Module:
    """The module holding ``name``."""
    return model.get_submodule(name.rpartition(".")[0])


def _find(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _same(a: Any, b: Any) -> bool:
    """Equal state values: tensors (quantised ones by their integers and parameters), tuples, plain values."""
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys() and all(
            _same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return (isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b)
                and all(_same(x, y) for x, y in zip(a, b, strict=True)))
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.is_quantized != b.is_quantized:
            return False
        if a.is_quantized:
            return (a.qscheme() == b.qscheme() and torch.equal(a.int_repr(), b.int_repr())
                    and torch.equal(a.dequantize(), b.dequantize()))
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    return a == b
