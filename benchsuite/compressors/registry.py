"""Every compressor, built-in or outside, registers through one entry-point group.

Entry points are listed eagerly but imported lazily, so a broken plugin costs only
itself: it is reported by name with its error, and the others still work. Set
``BENCHSUITE_DISABLE_PLUGINS=name1,name2`` to skip plugins by name.
"""

from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from benchsuite.compressors.base import Compressor
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
    """``name`` or ``name:key=value,key=value`` (values parsed as JSON where they can be)."""
    import json  # noqa: PLC0415

    name, _, options = spec.partition(":")
    cls = get_compressor_class(name.strip())
    params = {}
    for item in filter(None, (o.strip() for o in options.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"compressor option {item!r} in {spec!r} is not key=value")
        try:
            params[key.strip()] = json.loads(value, parse_constant=_no_constants)
        except json.JSONDecodeError:
            params[key.strip()] = value
        except ValueError as exc:
            raise UsageError(f"compressor option {item!r}: {exc}") from None
    try:
        return cls(cls.config_class.from_params(params))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"compressor {name!r}: invalid config: {exc}") from None


def _no_constants(name: str):
    raise ValueError(f"{name} is not a valid option value")
