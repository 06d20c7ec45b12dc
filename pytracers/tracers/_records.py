"""How a tracer's record becomes plain data (:meth:`Tracer.event_dict`).

Kept apart from :mod:`pytracers.tracers.base` so that whoever only formats
records (the command line's JSON output) does not load libbpf to do it.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable


def plain(value: Any) -> Any:
    """``value`` as plain data for ``json.dumps``: bytes become str (up to
    the first NUL), named tuples dicts (private fields left out), tuples
    lists, numpy scalars and arrays Python values; the rest as it is."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).split(b"\0", 1)[0].decode("utf-8", "replace")
    if hasattr(value, "_asdict"):
        return {k: plain(x) for k, x in value._asdict().items() if not k.startswith("_")}
    if isinstance(value, (list, tuple)):
        return [plain(x) for x in value]
    if isinstance(value, dict):
        return {str(k): plain(x) for k, x in value.items()}
    if hasattr(value, "tolist"):                       # numpy scalars and arrays
        return value.tolist()
    return value


def record_dict(ev: Any, leave_out: Iterable[str] = ()) -> Dict[str, Any]:
    """A decoded record (a named tuple) as a dict of plain values: its
    fields in order, each computed attribute of its class (a property:
    ``name``, ``args``, ``ret``...) in place of the field of that name or
    after the fields; names in ``leave_out`` and private names dropped."""
    d: Dict[str, Any] = dict(ev._asdict())
    cls = type(ev)
    for attr in dir(cls):
        if not attr.startswith("_") and isinstance(getattr(cls, attr, None), property):
            d[attr] = getattr(ev, attr)
    for k in leave_out:
        d.pop(k, None)
    return {k: plain(v) for k, v in d.items() if not k.startswith("_")}
