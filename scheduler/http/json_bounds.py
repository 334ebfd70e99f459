"""The bounds a decoded JSON body must keep before it goes further (to the journal, through msgpack
to a worker): nesting at most `MAX_DEPTH` levels, integers within 64 bits (what msgpack carries).
Floats past the double range are refused by the decoder itself. Pure: no I/O.

The check is cheap for the bodies that carry the load, and done at C speed: a body with at most
`MAX_DEPTH` brackets cannot nest deeper, and one that msgpack encodes holds no integer past 64 bits;
the decoded value is walked (to name the field) only when one of these cannot tell.
"""

from __future__ import annotations

from typing import Any

import msgspec

MAX_DEPTH = 32  # levels of arrays and objects in a body, the body itself included
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
_msgpack = msgspec.msgpack.Encoder().encode


def out_of_bounds(raw: bytes, value: Any) -> tuple[str, str] | None:
    """(the field, what is wrong) for a value of `value` (decoded from `raw`) past the bounds, or
    None. Fields are named as msgspec names them, `inputs[3].x`."""
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
        return _walk(value)
    try:
        _msgpack(value)  # in C: refuses an integer past 64 bits, as the journal and the pipe would
    except OverflowError:
        return _walk(value)
    return None


Link = tuple["Link | None", "str | int"] | None  # the path to a value: (its parent's link, its key or index)


def _walk(root: Any) -> tuple[str, str] | None:
    stack: list[tuple[Any, int, Link]] = [(root, 1, None)]
    while stack:
        value, depth, link = stack.pop()
        kind = type(value)
        if kind is int:
            if not INT_MIN <= value <= INT_MAX:
                return _path(link), "the integer is outside the 64-bit range [-2**63, 2**64 - 1]"
            continue
        if kind is float or kind is str or value is None or kind is bool:
            continue
        if depth > MAX_DEPTH:
            return _path(link), f"the value nests deeper than {MAX_DEPTH} levels of arrays and objects"
        depth += 1
        if kind is list or kind is tuple:
            stack.extend((item, depth, (link, index)) for index, item in enumerate(value))
        elif kind is dict:
            stack.extend((item, depth, (link, str(key))) for key, item in value.items())
        elif isinstance(value, msgspec.Struct):
            stack.extend((getattr(value, name), depth, (link, name)) for name in value.__struct_fields__)
    return None


def _path(link: Link) -> str:
    """`inputs[3].x` from the chain of links."""
    parts: list[str] = []
    while link is not None:
        link, key = link
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    return "".join(reversed(parts)).removeprefix(".") or "$"
