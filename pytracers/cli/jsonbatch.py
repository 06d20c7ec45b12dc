"""JSON lines for a whole batch of records at once (``trace --json``).

Formatting one record at a time (decode, a dict, ``json.dumps``) costs a few
microseconds in Python, so ``trace --json`` fell behind a syscall storm
(issue 16).  Here a batch of records -- a numpy structured array, as
``consume_views`` hands them over -- becomes its JSON lines in a few numpy
passes: each line is laid out in one row of a byte matrix (literal text
once per column, integers converted by numpy, strings and computed
attributes looked up per distinct value), unused bytes left NUL; the rows'
bytes minus the NULs are the lines.  JSON text never holds a NUL byte
(``json.dumps`` escapes control characters), so nothing else is removed.

The output is byte for byte what :func:`pytracers.cli.output.dumps` prints
for the same record (tests/test_cli_jsonbatch.py compares them): integers,
negative integers, integer arrays (nested lists), booleans, strings with
escapes and non-ASCII text (``\\uXXXX``, as ``json.dumps`` writes them), the
``time`` float of the CLI.  A record the plan cannot express (floats,
opaque bytes) keeps the per-event path.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

#: The CLI's ``time`` (:class:`~pytracers.cli.output.Clock`): seconds since
#: the epoch as ``round((ts_ns + offset_ns) / 1e9, 6)``.  In this range a
#: float's spacing (2**-22 s) is below a microsecond, so the rounded value's
#: repr is its six decimals with trailing zeros removed (computed exactly in
#: integers below); outside it the batch falls back to ``round``/``repr``.
_TIME_LO, _TIME_HI = float(1 << 30), float(1 << 31)     # years 2004 to 2038


def _json_str(raw: bytes) -> bytes:
    """A char array's JSON text, as the decoder and ``json.dumps`` make it."""
    return json.dumps(raw.partition(b"\0")[0].decode("utf-8", "replace")).encode("ascii")


class _Part:
    """One piece of every line: ``cells(rows)`` is a (rows, width) uint8
    array (or one row, broadcast) of its text per row; NUL bytes in it are
    padding, dropped from the line."""

    def cells(self, rows: Any) -> Any:
        raise NotImplementedError


class Literal(_Part):
    def __init__(self, text: str) -> None:
        self.text = text.encode("ascii")

    def cells(self, rows: Any) -> Any:
        import numpy as np
        return np.frombuffer(self.text, np.uint8)[None, :]


def _digits(mag: Any, w: int, pad_zeros: bool = True) -> Any:
    """(n, w) uint8: ``mag``'s (uint64) last ``w`` decimal digits, right
    aligned; leading zeros NUL (but the last digit) when ``pad_zeros``."""
    import numpy as np
    out = np.empty((len(mag), w), np.uint8)
    ten = np.uint64(10)
    q = mag
    for i in range(w - 1, -1, -1):
        nxt, d = np.divmod(q, ten)
        d += np.uint64(48)
        if pad_zeros and i < w - 1:
            d *= q != 0
        out[:, i] = d
        q = nxt
    return out


def _int_cells(col: Any) -> Any:
    """(n, w) uint8: each integer's decimal digits (after a '-' for a
    negative one), NULs before them."""
    import numpy as np
    n = len(col)
    if not n:
        return np.zeros((0, 1), np.uint8)
    if col.dtype.kind == "i" and int(col.min()) < 0:
        m = col.astype(np.int64)
        neg = m < 0
        # |m| without overflow at the int64 minimum
        mag = np.where(neg, -(m + 1), m).astype(np.uint64) + neg.astype(np.uint64)
        w = len(str(int(mag.max())))
        out = np.empty((n, w + 1), np.uint8)
        out[:, 0] = neg * np.uint8(ord("-"))
        out[:, 1:] = _digits(mag, w)
        return out
    mag = col.astype(np.uint64)
    return _digits(mag, len(str(int(mag.max()))))


class Int(_Part):
    """An integer field, or one element of an integer array (``index``)."""

    def __init__(self, field: str, index: Tuple[int, ...] = ()) -> None:
        self.field = field
        self.index = index

    def cells(self, rows: Any) -> Any:
        col = rows[self.field]
        if self.index:
            col = col[(slice(None),) + self.index]
        return _int_cells(col)


class Table(_Part):
    """A value looked up per distinct key: the key is the raw bytes of
    ``fields``, its text made once by ``make(rows, i)`` for the first row
    ``i`` that has it (a string's JSON, a computed attribute's JSON)."""

    LIMIT = 65536                 # distinct keys kept between batches

    def __init__(self, fields: Sequence[str], make: Callable[[Any, int], bytes]) -> None:
        self.fields = list(fields)
        self.make = make
        self.index: Dict[bytes, int] = {}
        self.texts: List[bytes] = []
        self._table: Any = None

    def _key_bytes(self, rows: Any) -> Any:
        """(n, k) uint8: each row's key, the raw bytes of ``fields``."""
        import numpy as np
        n = len(rows)
        cols = [np.ascontiguousarray(rows[f]).view(np.uint8).reshape(n, -1) for f in self.fields]
        return cols[0] if len(cols) == 1 else np.concatenate(cols, axis=1)

    def cells(self, rows: Any) -> Any:
        import numpy as np
        if len(self.texts) > self.LIMIT:
            self.index.clear()
            self.texts.clear()
            self._table = None
        index, texts = self.index, self.texts
        n = len(rows)
        key = self._key_bytes(rows)
        # one look-up per run of equal keys (a storm is mostly long runs)
        starts = np.flatnonzero(np.concatenate(
            [[True], (key[1:] != key[:-1]).any(axis=1)])) if n > 1 else np.zeros(1, np.intp)
        keys = np.ascontiguousarray(key[starts]).view(f"V{key.shape[1]}").ravel().tolist()
        idx = []
        for s, k in zip(starts.tolist(), keys):
            j = index.get(k)
            if j is None:
                j = index[k] = len(texts)
                texts.append(self.make(rows, s))
                self._table = None
            idx.append(j)
        if self._table is None:
            w = max(len(t) for t in texts)
            tab = np.zeros((len(texts), w), np.uint8)
            for j, t in enumerate(texts):
                tab[j, :len(t)] = np.frombuffer(t, np.uint8)
            self._table = tab
        lengths = np.diff(np.append(starts, n))
        return self._table[np.repeat(np.asarray(idx, dtype=np.intp), lengths)]


def string_part(field: str) -> Table:
    """A char array field: its JSON string, made once per distinct value."""
    def make(rows: Any, i: int) -> bytes:
        return _json_str(bytes(rows[field][i]))
    return Table([field], make)


def bool_part(field: str) -> Table:
    def make(rows: Any, i: int) -> bytes:
        return b"true" if bool(rows[field][i]) else b"false"
    return Table([field], make)


class Time(_Part):
    """The CLI's ``time``: ``round((ts + offset_ns) / 1e9, 6)`` as JSON."""

    def __init__(self, field: str, offset_ns: int) -> None:
        self.field = field
        self.offset_ns = offset_ns

    def cells(self, rows: Any) -> Any:
        import numpy as np
        ts = rows[self.field]
        n = len(ts)
        # the same float as (ts_ns + offset_ns) / 1e9 in Python: the int
        # sum rounded to a double (it is exact in int64 here), then divided
        f = (ts.astype(np.int64) + np.int64(self.offset_ns)).astype(np.float64) / 1e9
        if not n or f.min() < _TIME_LO or f.max() >= _TIME_HI:
            return _python_times(f)
        # f = k * 2**-22 exactly; f * 1e6 = k * 15625 / 2**16, rounded half
        # to even on the exact value, as round(f, 6) does
        k = (f * float(1 << 22)).astype(np.int64)
        q, r = k >> 16, k & 0xFFFF
        x = r * 15625
        micro = q * 15625 + (x >> 16)
        rem = x & 0xFFFF
        micro += (rem > 0x8000) | ((rem == 0x8000) & ((micro & 1) == 1))
        sec, frac = np.divmod(micro, 1_000_000)
        secs = _int_cells(sec)
        # six decimals, then trailing zeros dropped (at least one digit kept)
        digits = _digits(frac.astype(np.uint64), 6, pad_zeros=False)
        zeros = np.zeros(n, np.int64)
        for j in range(1, 6):
            zeros += (frac % (10 ** j)) == 0
        digits[np.arange(6)[None, :] >= (6 - zeros)[:, None]] = 0
        dot = np.full((n, 1), ord("."), np.uint8)
        return np.concatenate([secs, dot, digits], axis=1)


def _python_times(f: Any) -> Any:
    import numpy as np
    texts = [repr(round(x, 6)).encode("ascii") for x in f.tolist()]
    w = max((len(t) for t in texts), default=1)
    return np.array(texts, dtype=f"S{w}").view(np.uint8).reshape(len(texts), w)


class BatchJson:
    """A precompiled per-layout formatter: ``format(rows)`` -> the JSON
    lines (bytes, ASCII) of a batch of records, identical to
    ``dumps(dict) + "\\n"`` for each."""

    def __init__(self, parts: Sequence[_Part]) -> None:
        merged: List[_Part] = []
        for p in parts:                       # adjacent literals: one column block
            if isinstance(p, Literal) and merged and isinstance(merged[-1], Literal):
                merged[-1] = Literal((merged[-1].text + p.text).decode("ascii"))
            else:
                merged.append(p)
        self.parts = merged
        self._widths = [0] * len(merged)
        self._buf: Any = None

    def format(self, rows: Any) -> bytes:
        """The JSON lines of ``rows`` (a structured array or a view of one)."""
        import numpy as np
        n = len(rows)
        if not n:
            return b""
        blocks = [None if isinstance(p, Literal) else p.cells(rows) for p in self.parts]
        # Each part keeps the widest cell it has needed (a NUL-padded column
        # costs little): the literal text is written once per buffer, not
        # once per batch.
        widths = [len(p.text) if b is None else max(w, b.shape[1])   # type: ignore[attr-defined]
                  for p, b, w in zip(self.parts, blocks, self._widths)]
        if widths != self._widths or self._buf is None or n > len(self._buf):
            self._widths = widths
            self._buf = np.zeros((max(n, 0 if self._buf is None else 2 * len(self._buf)), sum(widths)), np.uint8)
            at = 0
            for p, w in zip(self.parts, widths):
                if isinstance(p, Literal):
                    self._buf[:, at:at + w] = np.frombuffer(p.text, np.uint8)
                at += w
        out = self._buf[:n]
        at = 0
        for b, w in zip(blocks, widths):
            if b is not None:
                bw = b.shape[1]
                out[:, at:at + bw] = b
                if bw < w:
                    out[:, at + bw:at + w] = 0
            at += w
        return out.tobytes().replace(b"\0", b"")


# ---- plans: which part prints which key ---------------------------------------------------

def key_text(name: str) -> str:
    return json.dumps(name) + ": "


def field_parts(dtype: Any, field: str, name: Optional[str] = None) -> Optional[List[_Part]]:
    """The parts printing ``"name": value`` for one field of a structured
    dtype, or None when its type has no batch form (floats, opaque bytes)."""
    parts: List[_Part] = [Literal(key_text(name or field))]
    value = value_parts(dtype, field)
    if value is None:
        return None
    return parts + value


def value_parts(dtype: Any, field: str) -> Optional[List[_Part]]:
    import numpy as np
    sub = dtype.fields[field][0]
    base, shape = sub.base, sub.shape
    if base.kind == "S" and not shape:
        return [string_part(field)]
    if base.kind == "b" and not shape:
        return [bool_part(field)]
    if base.kind not in "iu":
        return None
    if not shape:
        return [Int(field)]
    out: List[_Part] = []

    def nest(prefix: Tuple[int, ...], dims: Tuple[int, ...]) -> None:
        out.append(Literal("["))
        for i in range(dims[0]):
            if i:
                out.append(Literal(", "))
            if len(dims) == 1:
                out.append(Int(field, prefix + (i,)))
            else:
                nest(prefix + (i,), dims[1:])
        out.append(Literal("]"))
    nest((), tuple(int(d) for d in np.atleast_1d(shape)))
    return out


def record_parts(dtype: Any, fields: Sequence[str]) -> Optional[List[_Part]]:
    """``"f1": v1, "f2": v2, ...`` for ``fields`` of a structured dtype."""
    out: List[_Part] = []
    for i, f in enumerate(fields):
        if i:
            out.append(Literal(", "))
        p = field_parts(dtype, f)
        if p is None:
            return None
        out.extend(p)
    return out


def syscall_formatter(tracer: Any, dtype: Any, event: str, offset_ns: int) -> BatchJson:
    """``trace --json`` lines of a :class:`~pytracers.tracers.SyscallTracer`:
    ``event``, ``time``, the header and ``id``, ``ret``, ``latency_ns``
    (null when the tracer does not time calls), then ``args`` and ``name``
    -- what ``tracer.event_dict`` gives, in its order -- computed once per
    distinct (id, argument registers)."""
    decode = tracer.ring.decoder
    event_dict = tracer.event_dict

    def computed(rows: Any, i: int) -> bytes:
        d = event_dict(decode(rows[i:i + 1].tobytes(), 0))
        return (key_text("args") + json.dumps(d["args"], separators=(", ", ": "), default=str)
                + ", " + key_text("name") + json.dumps(d["name"])).encode("ascii")

    head = record_parts(dtype, ["ts_ns", "pid", "tid", "cpu", "comm", "id", "ret"])
    assert head is not None
    parts: List[_Part] = [Literal("{" + key_text("event") + json.dumps(event) + ", "
                                  + key_text("time")), Time("ts_ns", offset_ns),
                          Literal(", "), *head, Literal(", " + key_text("latency_ns"))]
    parts.append(Int("latency_ns") if tracer.measure_latency else Literal("null"))
    parts += [Literal(", "), Table(["id", "args"], computed), Literal("}\n")]
    return BatchJson(parts)
