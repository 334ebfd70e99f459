"""The bounds a decoded JSON body must keep before it goes further (to the journal, through msgpack
to a worker): nesting at most `MAX_DEPTH` levels, integers within 64 bits (what msgpack carries).
Floats past the double range are refused by the decoder itself. Pure: no I/O.

The check is cheap for the bodies that carry the load: the raw bytes are screened first, at C speed
(a body with at most `MAX_DEPTH` brackets cannot nest deeper; one without a run of 19 digits holds no
integer past 64 bits), and the decoded value is walked only when the screen cannot tell.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

MAX_DEPTH = 32  # levels of arrays and objects in a body, the body itself included
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
_LONG_DIGITS = re.compile(rb"\d{19}")


def out_of_bounds(raw: bytes, value: Any) -> tuple[str, str] | None:
    """(the field, what is wrong) for the first value of `value` (decoded from `raw`) past the
    bounds, or None. Fields are named as msgspec names them, `inputs[3].x`."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH and _LONG_DIGITS.search(raw) is None:
        return None
    return _walk(value)


def _walk(root: Any) -> tuple[str, str] | None:
    stack: list[tuple[Any, str, int]] = [(root, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        kind = type(value)
        if kind is int:
            if not INT_MIN <= value <= INT_MAX:
                return path or "$", "the integer is outside the 64-bit range [-2**63, 2**64 - 1]"
            continue
        if kind is float or kind is str or value is None or kind is bool:
            continue
        if depth > MAX_DEPTH:
            return path or "$", f"the value nests deeper than {MAX_DEPTH} levels of arrays and objects"
        if isinstance(value, list | tuple):
            stack.extend((item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value))
        elif isinstance(value, dict):
            stack.extend(
                (item, f"{path}.{key}" if path else str(key), depth + 1) for key, item in value.items()
            )
        elif isinstance(value, msgspec.Struct):
            stack.extend(
                (getattr(value, name), f"{path}.{name}" if path else name, depth + 1)
                for name in value.__struct_fields__
            )
    return None
