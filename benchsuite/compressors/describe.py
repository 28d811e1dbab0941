"""What a compressor's options are, for ``benchsuite describe`` and ``benchsuite list compressors``: each
config field's name, type, default and meaning (the comment beside the field in its config class)."""

from __future__ import annotations

import inspect
import re
import types
import typing
from dataclasses import MISSING, dataclass, fields
from typing import Any

_FIELD_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+)$")


@dataclass(frozen=True)
class OptionDoc:
    name: str
    type: str
    default: Any
    meaning: str


def _comments(config_class: type) -> dict[str, str]:
    """Field name -> the comment on its line, from the class and its bases (a subclass's comment wins)."""
    found: dict[str, str] = {}
    for klass in reversed(config_class.__mro__):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for line in source.splitlines():
            match = _FIELD_COMMENT.match(line)
            if match:
                found[match.group(1)] = match.group(2).strip()
    return found


def type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "None"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(hint, "__name__", str(hint))


def options(config_class: type) -> list[OptionDoc]:
    hints = typing.get_type_hints(config_class)
    meanings = _comments(config_class)
    docs = []
    for f in fields(config_class):
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else None)
        docs.append(OptionDoc(f.name, type_name(hints.get(f.name, f.type)), default, meanings.get(f.name, "")))
    return docs


def _doc(cls: type) -> str:
    """The compressor's own docstring (or its nearest compressor base's), else its module's first paragraph."""
    from benchsuite.compressors.base import Compressor  # noqa: PLC0415

    for klass in cls.__mro__:
        if klass is Compressor or not issubclass(klass, Compressor):
            break
        if klass.__dict__.get("__doc__"):
            return inspect.cleandoc(klass.__doc__)
    module = inspect.getmodule(cls)
    text = inspect.getdoc(module) if module else ""
    return (text or "").split("\n\n")[0]


def describe(name: str) -> str:
    """A compressor's description: what it does (its docstring), its family, needs, and options."""
    from benchsuite.compressors.registry import get_compressor_class, registered  # noqa: PLC0415

    cls = get_compressor_class(name)
    entry = registered().get(name)
    instance = cls()  # the defaults; save_format may depend on the config
    lines = [f"{name} ({cls.family}; from {entry.origin if entry else cls.__module__})"]
    doc = _doc(cls)
    if doc:
        lines += ["", doc]
    lines += ["", f"needs: {', '.join(sorted(cls.NEEDS)) or 'nothing but the model'}; computes in {instance.compute}; "
                  f"saves {instance.save_format}"]
    if cls.follows:
        lines.append(f"a last stage: it needs what an earlier stage leaves (the conformance tests run "
                     f"'{cls.follows}+{cls.name}')")
    lines.append("")
    docs = options(cls.config_class)
    if not docs:
        lines.append("no options")
    else:
        width = max(len(d.name) for d in docs)
        type_width = max(len(d.type) for d in docs)
        lines.append(f"options ('{name}:option=value,...'):")
        for d in docs:
            lines.append(f"  {d.name:{width}}  {d.type:{type_width}}  default {d.default!r:10}  {d.meaning}".rstrip())
    return "\n".join(lines + ["", searched(cls)])


def searched(cls: type) -> str:
    """One line on what ``benchsuite optimise`` may try of the compressor (its ``search_space``)."""
    space = cls.search_space
    if space is None:
        return "not searched by 'benchsuite optimise' (it declares no search_space)"
    if not space:
        return "searched by 'benchsuite optimise' at its defaults"
    tried = "; ".join(f"{option} in ({', '.join(repr(v) for v in values)})" for option, values in space.items())
    return f"searched by 'benchsuite optimise': {tried}"
