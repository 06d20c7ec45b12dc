"""TracepointTracer: any tracepoint, its fields decoded by its format file
(tracepoint.bpf.o, kind tp).

One program, attached to ``category:name``, copies the tracepoint's record as
the kernel writes it into the ring buffer; Python decodes it with the
tracepoint's own description, tracefs ``events/<category>/<name>/format``
(each field's name, type, offset, size and signedness).  Nothing about the
tracepoint is compiled in, so every tracepoint the running kernel lists can
be traced, with the field names and layout of that kernel.

Records are named tuples: the common header (``ts_ns``, ``pid``, ``tid``,
``cpu``, ``comm`` -- the task that hit the tracepoint) and then the
tracepoint's fields.  ``ev.fields`` maps each field's kernel name to its
value; as attributes, a field whose name is taken by the header or is not a
Python identifier gets a ``tp_`` prefix (signal:signal_generate's ``pid``,
the target's, is ``ev.tp_pid``; ``ev.pid`` is the sender's).  Decoding:

* integers by size, signed as the format says; ``bool`` as bool;
  pointers as int;
* ``char[N]`` as str (up to the first NUL); other byte arrays as bytes;
  arrays of wider integers as tuples of int;
* ``__data_loc char[]`` (and ``__rel_loc``) as str, other ``__data_loc``
  arrays as bytes: the 32-bit word in the record holds the payload's offset
  (low 16 bits) and length (high 16 bits);
* the ``common_*`` fields are left out: the kernel overwrites them before BPF
  runs (see bpf_src/tracepoint.bpf.c), and the header says who ran.

How much is copied: the fixed part of the record, plus ``payload_bytes``
(default 512) for the payloads of ``__data_loc`` fields, at most TP_MAX
(2040: the kernel hands BPF records of at most 2048 bytes, the first 8 not
copied).  512 holds the paths, device and driver names and commands that
__data_loc fields usually carry, while a record costs the ring only
``fixed part + payload_bytes + 48`` bytes; ``payload_bytes=TP_MAX`` copies
every record whole.  A payload that lies past the copied bytes is reported as
None, never as garbage, and counted in ``t.truncated``.

``syscalls:*`` tracepoints hand BPF a smaller context (the syscall number and
the six argument slots, or the return value), so only those fields are
decoded there; :class:`~pytracers.tracers.SyscallTracer` is the richer tool
for syscalls.
"""
from __future__ import annotations

import errno as _errno
import json
import keyword
import re
import struct
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..kernel import tracefs
from ..errors import BadArgumentError, BadTypeError, NotSupportedError, TracefsError
from ..kinds import TP
from .base import Tracer, named_tuple

__all__ = ["TracepointTracer", "split_tracepoint_name", "TP_MAX", "TP_SKIP", "PAYLOAD_BYTES",
           "HEADER_FIELDS"]

TP_SKIP = 8                     # record bytes not copied (the common_* fields)
TP_MAX = 2048 - TP_SKIP         # the most bytes copied (PERF_MAX_TRACE_SIZE - TP_SKIP)
PAYLOAD_BYTES = 512             # default room for __data_loc payloads past the fixed part
HEADER_FIELDS = ("ts_ns", "pid", "tid", "cpu", "comm")
# Attribute names a tracepoint field may not take (it gets the tp_ prefix).
_RESERVED = frozenset(HEADER_FIELDS) | {"fields", "tracepoint"}
# The BPF context of syscalls:* events: the trace_entry, the syscall number
# and six argument slots (sys_enter) or the return value (sys_exit).
SYSCALL_CTX_END = 16 + 8 * 6

_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_INT_CODES = {1: "b", 2: "h", 4: "i", 8: "q"}
_BYTE_TYPES = {"u8", "__u8", "unsigned char", "uint8_t", "s8", "__s8", "signed char",
               "int8_t"}
_CHAR_TYPES = {"char", "const char"}


def split_tracepoint_name(spec: Any) -> Tuple[str, str]:
    """``"category:name"`` (or ``"category/name"``) -> (category, name);
    BadArgumentError for anything else (a glob, a path, a missing part)."""
    if not isinstance(spec, str):
        raise BadTypeError(f"a tracepoint is named by a str 'category:name', not "
                           f"{type(spec).__name__}")
    sep = ":" if ":" in spec else "/"
    category, found, name = spec.partition(sep)
    if not found or not all(_PART.fullmatch(p) and ".." not in p for p in (category, name)):
        raise BadArgumentError(f"a tracepoint is 'category:name' (e.g. sched:sched_switch), "
                               f"got {spec!r}")
    return category, name


class _Decoded:
    """How one tracepoint field becomes a Python value (built once per tracer)."""

    __slots__ = ("field", "attr", "code", "post", "loc", "end")

    def __init__(self, field: tracefs.Field, attr: str, code: str,
                 post: Optional[Callable[..., Any]] = None, loc: bool = False) -> None:
        self.field = field
        self.attr = attr
        self.code = code                 # struct code of the fixed part of the field
        self.post = post                 # value -> Python value; (word, data, size) if loc
        self.loc = loc                   # a __data_loc/__rel_loc word: the payload is after
        self.end = field.offset + field.size - TP_SKIP   # within the copied bytes


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _array_bound(ftype: str) -> Optional[int]:
    m = re.search(r"\[(\d*)\]$", ftype)
    if m is None:
        return None
    return int(m.group(1)) if m.group(1) else 0


def _plan(f: tracefs.Field, attr: str) -> _Decoded:
    """The struct code and conversion of field ``f``."""
    ftype = f.type
    loc = ftype.split(" ", 1)[0] if ftype.startswith(("__data_loc ", "__rel_loc ")) else ""
    if loc:
        if f.size != 4:
            return _Decoded(f, attr, f"{f.size}s")
        is_str = ftype[len(loc) + 1:].replace(" ", "") in ("char[]", "constchar[]")
        base = f.offset + f.size if loc == "__rel_loc" else 0   # __rel_loc: after the field

        def loc_value(word: int, data: bytes, size: int, _b: int = base,
                      _s: bool = is_str) -> Any:
            start = _b + (word & 0xFFFF) - TP_SKIP
            end = start + (word >> 16)
            if start < 0 or end > size:
                return None                   # outside the copied bytes
            raw = data[start:end]
            return _cstr(raw) if _s else raw
        return _Decoded(f, attr, "I", loc_value, loc=True)
    bound = _array_bound(ftype)
    if bound is not None:
        elem = ftype[:ftype.rfind("[")].strip()
        if elem in _CHAR_TYPES:
            return _Decoded(f, attr, f"{f.size}s", _cstr)
        if elem in _BYTE_TYPES or not bound or f.size % bound:
            return _Decoded(f, attr, f"{f.size}s")
        width = f.size // bound
        code = _INT_CODES.get(width)
        if code is None:
            return _Decoded(f, attr, f"{f.size}s")
        if "*" in elem or not f.signed:
            code = code.upper()
        elems = struct.Struct(f"<{bound}{code}")
        return _Decoded(f, attr, f"{f.size}s", elems.unpack)
    if ftype in ("bool", "_Bool") and f.size == 1:
        return _Decoded(f, attr, "?")
    code = _INT_CODES.get(f.size)
    if code is None:
        return _Decoded(f, attr, f"{f.size}s")     # a struct or an odd size: its bytes
    if "*" in ftype or not f.signed:
        code = code.upper()
    return _Decoded(f, attr, code)


def _attr_names(names: Sequence[str]) -> List[str]:
    """Attribute names for the tracepoint's fields: the kernel's name, or
    ``tp_<name>`` when the header (or Python) has a claim on it."""
    taken = set(_RESERVED)
    out: List[str] = []
    for name in names:
        cand = name.lstrip("_") or "field"
        if cand in taken or keyword.iskeyword(cand) or not cand.isidentifier():
            cand = "tp_" + cand
        if not cand.isidentifier():
            cand = f"tp_field{len(out)}"
        while cand in taken:
            cand += "_"
        taken.add(cand)
        out.append(cand)
    return out


class TracepointTracer(Tracer):
    """Trace one tracepoint, ``"category:name"``, and decode its fields by the
    kernel's format file (see the module docstring).

    ``payload_bytes``: bytes copied past the record's fixed part for the
    payloads of its ``__data_loc`` fields (default 512; the copy is at most
    TP_MAX bytes in all).  The other keyword arguments are the tracers'
    common ones (``pid=``, ``comm=`` -- the task that hits the tracepoint --,
    ``ring_size=``, ``wakeup_bytes=``, ``latency=``).

    ``t.fields``: the decoded fields (:class:`pytracers.tracefs.Field`);
    ``t.copy_bytes``: bytes of each record copied; ``t.truncated``: fields
    reported as None because their payload lay past the copied bytes.
    """

    object_name = "tracepoint"
    event_struct = "tp_event"
    kind = TP

    def __init__(self, tracepoint: str, *, payload_bytes: int = PAYLOAD_BYTES,
                 **kw: Any) -> None:
        if isinstance(payload_bytes, bool) or not isinstance(payload_bytes, int):
            raise BadTypeError(f"payload_bytes must be an int, not "
                               f"{type(payload_bytes).__name__}")
        if not 0 <= payload_bytes <= TP_MAX:
            raise BadArgumentError(f"payload_bytes must be 0..{TP_MAX}, got {payload_bytes}")
        self.category, self.name = split_tracepoint_name(tracepoint)
        self.tracepoint = f"{self.category}:{self.name}"
        try:
            tracefs.root()
        except TracefsError as e:
            if e.errno in (_errno.EPERM, _errno.EACCES):
                raise
            raise NotSupportedError("tracefs", str(e),
                                    hint="tracepoints are listed and attached through tracefs: "
                                         "mount -t tracefs tracefs /sys/kernel/tracing "
                                         "(CONFIG_TRACING)") from None
        all_fields = tracefs.tracepoint_format(self.category, self.name)
        own = sorted((f for f in all_fields if not f.name.startswith("common_")),
                     key=lambda f: f.offset)
        if self.category == "syscalls":
            own = [f for f in own if f.offset + f.size <= SYSCALL_CTX_END
                   and not f.type.startswith(("__data_loc ", "__rel_loc "))]
            fixed = max((f.offset + f.size for f in own), default=0) - TP_SKIP
        else:
            fixed = max((f.offset + f.size for f in all_fields), default=0) - TP_SKIP
        self.fields: Tuple[tracefs.Field, ...] = tuple(own)
        self._pointer_fields = frozenset(f.name for f in own if "*" in f.type)
        if fixed > TP_MAX:
            raise NotSupportedError(f"tracing {self.tracepoint}",
                                    f"its fixed part is {fixed + TP_SKIP} bytes, more than the "
                                    f"{TP_MAX + TP_SKIP} a tracepoint hands to BPF")
        fixed = max(fixed, 8)
        has_loc = any(f.type.startswith(("__data_loc ", "__rel_loc ")) for f in own)
        self.copy_bytes = min(fixed + payload_bytes, TP_MAX) if has_loc else fixed
        self._truncated = [0]
        self._plans = [_plan(f, a) for f, a in zip(own, _attr_names([f.name for f in own]))]
        self.why = (f"tp: the tracepoint {self.tracepoint} runs only when it fires and its "
                    f"record is a stable interface, decoded by its format file ({len(own)} "
                    f"field{'s' if len(own) != 1 else ''}; {self.copy_bytes} bytes copied"
                    + (f", {self.copy_bytes - fixed} of them for __data_loc payloads"
                       if has_loc else "") + ")")
        super().__init__(**kw)

    @property
    def truncated(self) -> int:
        """Fields reported as None because their payload lay past the copied bytes."""
        return self._truncated[0]

    def event_dict(self, ev: Any) -> Dict[str, Any]:
        """A record as plain data: ``"tracepoint"``, the header (``ts_ns``,
        ``pid``, ``tid``, ``cpu``, ``comm``) and ``"fields"``, the fields by
        kernel name (bytes as hex, arrays as lists, None where truncated)."""
        return {"tracepoint": ev.tracepoint, **{h: getattr(ev, h) for h in HEADER_FIELDS},
                "fields": {k: _field_json(v) for k, v in ev.fields.items()}}

    def fields_text(self, ev: Any) -> str:
        """A record's fields on one line, ``name=value`` by kernel name:
        pointers in hex, bytes as hex, arrays as ``[a,b]``, a string in JSON
        quotes when it has spaces, quotes, ``=`` or backslashes, and
        ``(truncated)`` for a payload past the copied bytes."""
        pointers = self._pointer_fields
        return " ".join(f"{k}={_field_text(v, k in pointers)}" for k, v in ev.fields.items())

    def _configure(self, open_obj: Any) -> None:
        open_obj.config["cfg_copy"] = self.copy_bytes

    def _attach(self, obj: Any) -> None:
        self._link(obj.programs["tp_record"].attach_tracepoint(self.category, self.name))

    # ---- decoding --------------------------------------------------------------------
    def _decoder(self, obj: Any) -> Callable[[Any, int], Any]:
        layout = obj.btf.struct_layout(self.event_struct)
        hdr = [(layout.field(n).offset, "16s" if n == "comm" else
                {4: "I", 8: "Q"}[layout.field(n).size]) for n in HEADER_FIELDS]
        size_off = layout.field("size").offset
        data_off = layout.field("data").offset
        plans = self._plans
        items = hdr + [(size_off, "I")] + [(data_off + p.field.offset - TP_SKIP, p.code)
                                           for p in plans]
        fmt, pos = ["<"], 0
        for off, code in items:               # in record order: header, size, fields
            if off < pos:
                raise NotSupportedError(f"decoding {self.tracepoint}",
                                        f"its format has fields overlapping at offset "
                                        f"{off - data_off + TP_SKIP}")
            if off > pos:
                fmt.append(f"{off - pos}x")
            fmt.append(code)
            pos = off + struct.calcsize("<" + code)
        unpack = struct.Struct("".join(fmt)).unpack_from
        base = named_tuple(f"{self.category}_{self.name}", HEADER_FIELDS + tuple(
            p.attr for p in plans))
        kernel_names = tuple(p.field.name for p in plans)
        n_hdr = len(HEADER_FIELDS)
        first = n_hdr + 1                       # unpacked: header, size, fields
        tracepoint = self.tracepoint

        def fields(rec: Any) -> Dict[str, Any]:
            return dict(zip(kernel_names, tuple.__getitem__(rec, slice(n_hdr, None))))

        cls = type(f"TracepointEvent_{self.category}_{self.name}", (base,), {
            "__slots__": (), "__doc__": f"A {tracepoint} record: the header and the "
                                        "tracepoint's fields (ev.fields by kernel name)",
            "fields": property(fields), "tracepoint": tracepoint})
        simple = [(first + i, p.post) for i, p in enumerate(plans)
                  if p.post is not None and not p.loc]
        locs = [(first + i, p.post) for i, p in enumerate(plans) if p.loc and p.post]
        ends = [(first + i, p.end) for i, p in enumerate(plans)]
        fixed_end = max((e for _i, e in ends), default=0)
        trunc = self._truncated
        tuple_new = tuple.__new__
        i_size = n_hdr

        def decode(buffer: Any, offset: int = 0) -> Any:
            vals = list(unpack(buffer, offset))
            vals[4] = _cstr(vals[4])                      # comm
            size = vals[i_size]
            for i, post in simple:
                vals[i] = post(vals[i])
            if locs:
                data = bytes(buffer[offset + data_off:offset + data_off + size])
                for i, loc_value in locs:
                    v = loc_value(vals[i], data, size)
                    if v is None:
                        trunc[0] += 1
                    vals[i] = v
            if size < fixed_end:                          # the copy failed
                for i, end in ends:
                    if end > size and vals[i] is not None:
                        vals[i] = None
                        trunc[0] += 1
            del vals[i_size]
            return tuple_new(cls, vals)
        return decode


# ---- records as data and text -------------------------------------------------------------

_PLAIN_WORD = re.compile(r"[^\s\"'=\\]+")


def _field_text(v: Any, pointer: bool) -> str:
    """A tracepoint field's value on a line of text: name=value."""
    if v is None:
        return "(truncated)"
    if isinstance(v, bool) or isinstance(v, float):
        return str(v)
    if isinstance(v, int):
        return hex(v & 0xFFFFFFFFFFFFFFFF) if pointer else str(v)
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex() or '""'
    if isinstance(v, tuple):
        return "[" + ",".join(_field_text(x, pointer) for x in v) + "]"
    text = str(v)
    return text if _PLAIN_WORD.fullmatch(text) else json.dumps(text)


def _field_json(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    if isinstance(v, tuple):
        return list(v)
    return v
