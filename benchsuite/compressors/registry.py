"""Every compressor, built-in or outside, registers through one entry-point group.

Entry points are listed eagerly but imported lazily, so a broken plugin costs only
itself: it is reported by name with its error, and the others still work. Set
``BENCHSUITE_DISABLE_PLUGINS=name1,name2`` to skip plugins by name.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import typing
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from benchsuite.compressors.base import Compressor
from benchsuite.compressors.options import OptionError, alternatives
from benchsuite.errors import UsageError

GROUP = "benchsuite.compressors"
DISABLE_ENV = "BENCHSUITE_DISABLE_PLUGINS"
log = logging.getLogger("benchsuite.registry")


@dataclass(frozen=True)
class Registered:
    name: str
    entry_point: EntryPoint

    @property
    def origin(self) -> str:
        dist = self.entry_point.dist
        return f"{dist.name} {dist.version}" if dist is not None else self.entry_point.value


def registered() -> dict[str, Registered]:
    disabled = {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
    found: dict[str, Registered] = {}
    for ep in entry_points(group=GROUP):
        if ep.name in disabled:
            continue
        if ep.name in found:
            if found[ep.name].entry_point.value != ep.value:
                log.warning("compressor name %r is registered twice (%s and %s); keeping the first",
                            ep.name, found[ep.name].entry_point.value, ep.value)
            continue
        found[ep.name] = Registered(ep.name, ep)
    return dict(sorted(found.items()))


def get_compressor_class(name: str) -> type[Compressor]:
    entries = registered()
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown compressor {name!r}{hint} (known: {', '.join(entries) or 'none'})")
    entry = entries[name]
    try:
        cls = entry.entry_point.load()
    except Exception as exc:
        raise UsageError(f"compressor plugin {name!r} ({entry.origin}) failed to import: "
                         f"{type(exc).__name__}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Compressor)):
        raise UsageError(f"compressor plugin {name!r} ({entry.entry_point.value}) is not a Compressor subclass")
    return cls


def build_compressor(spec: str) -> Compressor:
    """``name``, ``name:key=value,key=value``, or a pipeline of them joined by ``+``
    (``distill:layers=3+dynamic_int8``), as ``benchsuite run --compressors`` takes it. A pipeline of one
    stage is that stage. A compressor whose optional package is missing is refused, with the fix.
    """
    parts = [part.strip() for part in spec.split("+")]
    if len(parts) > 1:
        if not all(parts):
            raise UsageError(f"pipeline {spec!r} has an empty stage: join compressor specs with a single '+'")
        from benchsuite.compressors.pipeline import Pipeline  # noqa: PLC0415

        return Pipeline([_build_one(part) for part in parts])
    return _build_one(spec)


def _build_one(spec: str) -> Compressor:
    """One compressor: ``name`` or ``name:key=value,key=value``.

    Each value is read as JSON where it can be (``true``, ``4``, ``0.5``, ``null``, ``[0,3]``) and is its text
    otherwise (``engine=qnnpack``); the config then parses it to its field's type or refuses it, naming the
    option (:meth:`CompressorConfig.from_params`). A bool field also takes ``True`` and ``False``, and an
    optional field ``None``, as the report's options column prints them; a tuple field takes its items
    comma-separated (``keep=0,3``), one alone (``keep=3``) or in brackets (``keep=[0,3]``, ``transfer=[stsb,rte]``:
    on the command line, where commas also separate compressors, a list of words needs the brackets).
    """
    name, _, options = spec.partition(":")
    name = name.strip()
    cls = get_compressor_class(name)
    reason = cls.unavailable_reason()
    if reason is not None:
        raise UsageError(f"compressor {name!r} is not available here: it {reason}")
    hints = typing.get_type_hints(cls.config_class)
    texts: dict[str, str] = {}
    last = None
    for item in filter(None, (o.strip() for o in options.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            if last is not None and (_is_tuple(hints.get(last)) or texts[last].count("[") > texts[last].count("]")):
                texts[last] += f",{item}"  # the next item of a list: keep=0,3 or keep=[0,3]
                continue
            raise UsageError(f"compressor option {item!r} in {spec!r} is not key=value")
        key = key.strip()
        if key in texts:
            raise UsageError(f"compressor option {key!r} is given twice in {spec!r}")
        texts[key], last = value.strip(), key
    params = {}
    for key, text in texts.items():
        try:
            params[key] = _parse_value(text, hints.get(key))
        except ValueError as exc:  # NaN, Infinity
            raise UsageError(f"option {key} of {name}: {exc}") from None
    try:
        config = cls.config_class.from_params(params)
    except OptionError as exc:
        raise UsageError(exc.message(name)) from None
    except (TypeError, ValueError) as exc:
        raise UsageError(f"compressor {name!r}: invalid config: {exc}") from None
    return cls(config)


def _parse_value(text: str, hint) -> object:
    """One option's text as JSON where it can be, else the text itself (the field's type is checked later)."""
    if _is_tuple(hint) and text != "null":
        # keep=0,3 or keep=[0,3] -> [0,3]; keep=3 -> [3]; keep= or keep=[] -> []; transfer=[stsb,rte] -> ["stsb", "rte"]
        inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        return [_parse_value(item.strip(), None) for item in inner.split(",")] if inner.strip() else []
    try:
        return json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError:
        if text in ("True", "False") and _allows(hint, bool):  # as the report's options column prints them
            return text == "True"
        if text == "None" and _allows(hint, type(None)):
            return None
        return text


def _is_tuple(hint) -> bool:
    return any(h is tuple or typing.get_origin(h) is tuple for h in alternatives(hint))


def _allows(hint, kind: type) -> bool:
    return kind in alternatives(hint)


def _no_constants(name: str):
    raise ValueError(f"{name} is not a valid option value")
