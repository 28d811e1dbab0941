"""The JSON of a config-like dataclass that hashes: options added late are left out while at their default.

A field added after records of a dataclass existed (listed in its ``LATE_OPTIONS``) would move every hash
built from its JSON, although a record that never set it means the same thing. Left out while it equals its
default, which keeps the old behaviour, it re-keys only what sets it.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any


def canonical_json(obj: Any) -> dict[str, Any]:
    """``asdict(obj)`` without the fields of ``LATE_OPTIONS`` that hold their default. A class's
    ``LATE_OPTIONS`` adds to its bases' (a late option of a shared base is late in every subclass)."""
    data = asdict(obj)
    defaults = {f.name: f.default for f in fields(obj)}
    late = {name for klass in type(obj).__mro__ for name in vars(klass).get("LATE_OPTIONS", ())}
    for name in sorted(late):
        if data[name] == defaults[name]:
            del data[name]
    return data
