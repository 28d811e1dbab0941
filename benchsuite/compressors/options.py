"""Option values parsed to their config field's type, or refused with a message naming the option,
the value and what is allowed: never a string or a number standing in for a bool."""

from __future__ import annotations

import json
import math
import types
import typing
from typing import Any


class OptionError(ValueError):
    """An option value that is not of its field's type; the message names the option, the value and what is
    allowed. ``message(owner)`` words it for another owner (the compressor's name rather than its config's)."""

    def __init__(self, option: str, value: Any, allowed: str, owner: str):
        self.option, self.value, self.allowed = option, value, allowed
        super().__init__(self.message(owner))

    def message(self, owner: str) -> str:
        return f"option {self.option} of {owner} must be {self.allowed}, got {self.value!r}"


class _Refused(Exception):
    """Raised inside :func:`_convert`; its message says what would have been allowed."""


def coerce(name: str, value: Any, hint: Any, owner: str) -> Any:
    try:
        return _convert(value, hint)
    except _Refused as exc:
        raise OptionError(name, value, str(exc), owner) from None


def _convert(value: Any, hint: Any) -> Any:
    """``value`` as ``hint`` says, or :class:`_Refused`: never a string or a number standing in for a bool."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        if value is None:
            return None
        raise _Refused("null")
    if origin in _UNIONS:  # ``X | None``, or any union: the first alternative that takes the value
        if value is None and type(None) in args:
            return None
        refusals = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg)
            except _Refused as exc:
                refusals.append(str(exc))
        raise _Refused(_either(refusals + (["null"] if type(None) in args else [])))
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _Refused(_describe(hint))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Refused(_describe(hint))
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Refused(_describe(hint))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Refused(_describe(hint))
        try:
            number = float(value)
        except OverflowError:
            raise _Refused("a finite number") from None
        if not math.isfinite(number):
            raise _Refused("a finite number")
        return number
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Refused(_describe(hint))
    if hint is tuple or origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Refused(_describe(hint))
        if not args:  # a bare ``tuple``
            return tuple(value)
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            raise _Refused(_describe(hint))
        try:
            return tuple(_convert(v, item) for v, item in zip(value, items, strict=True))
        except _Refused:
            raise _Refused(_describe(hint)) from None
    if isinstance(value, float) and not math.isfinite(value):  # a type not known here: only finiteness
        raise _Refused("finite")
    return value


_UNIONS = (typing.Union, getattr(types, "UnionType", typing.Union))


def alternatives(hint: Any) -> tuple:
    """``X | Y`` -> ``(X, Y)``; any other hint -> ``(hint,)``."""
    return typing.get_args(hint) if typing.get_origin(hint) in _UNIONS else (hint,)
_PLURALS = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "null"
    if origin in _UNIONS:
        return _either([_describe(a) for a in args if a is not type(None)] + (["null"] if type(None) in args else []))
    if origin is typing.Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if hint is tuple or origin is tuple:
        if not args:
            return "a list"
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_PLURALS.get(args[0], f'items each {_describe(args[0])}')}"
        return f"a list of {len(args)} items ({', '.join(_describe(a) for a in args)})"
    return getattr(hint, "__name__", str(hint))


def _either(options: list[str]) -> str:
    return options[0] if len(options) == 1 else ", ".join(options[:-1]) + " or " + options[-1]
