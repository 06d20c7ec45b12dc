"""Global variables of a loaded object: ``loaded.globals["calls"]``.

A BPF object's globals live in its data sections -- ``.bss`` (zero-initialised),
``.data`` (initialised), ``.rodata`` (``const``) -- which libbpf turns into
one-element array maps.  :class:`Globals` reads and writes them by name,
typed through the object's BTF:

- integers, enums and booleans are ``int``/``bool``, floats ``float``,
  pointers ``int``;
- ``char`` arrays are ``str`` (up to the first NUL; write a ``str`` or
  ``bytes`` that leaves room for the NUL);
- arrays of numbers are numpy arrays (a copy; :meth:`Globals.view` gives a
  live view of the kernel's memory, e.g. a histogram the program updates);
- structs are records (:mod:`pytracers.btf`); write a dict of fields to
  change some of them, or ``bytes`` of the struct's size;
- anything else is ``bytes``; :meth:`Globals.raw` gives any variable's bytes.

Where the kernel allows (maps created with ``BPF_F_MMAPABLE``: libbpf does so
for data sections on kernels 5.5 and later) the section is mmapped, so reads
and writes are plain memory accesses that the programs see at once;
otherwise each access is a map lookup (and update) of the whole section.
``.rodata`` is frozen at load: writing it raises
:class:`~pytracers.errors.BadArgumentError`.  Before load, set ``.bss`` and
``.data`` values (and ``const volatile`` ones) through
:attr:`OpenObject.config <pytracers.object.OpenObject.config>`.
"""
from __future__ import annotations

import mmap
import struct
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Tuple

from ._libbpf import lib
from ._resource import Resource
from .errors import BadArgumentError, BadTypeError, TargetNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from .btf.layout import Field
    from .elf.inspect import Variable
    from .maps import Map
    from .object import Object

__all__ = ["Globals", "VarCodec", "BPF_F_MMAPABLE"]

BPF_F_MMAPABLE = 1 << 10        # include/uapi/linux/bpf.h
PAGE_SIZE = mmap.PAGESIZE
_CODES = {("int", 1): "b", ("int", 2): "h", ("int", 4): "i", ("int", 8): "q",
          ("uint", 1): "B", ("uint", 2): "H", ("uint", 4): "I", ("uint", 8): "Q",
          ("ptr", 8): "Q", ("ptr", 4): "I", ("bool", 1): "?",
          ("float", 4): "f", ("float", 8): "d", ("float", 2): "e"}


class VarCodec:
    """How one variable's bytes become a value and back (from its BTF type)."""

    def __init__(self, name: str, size: int, btf: Any, type_id: int) -> None:
        self.name = name
        self.size = size
        self.kind = "bytes"
        self.field: Optional["Field"] = None
        self.layout: Any = None
        self.np_dtype: Any = None
        if btf is None or not type_id:
            return
        from .btf import BtfError, Kind
        from .btf.layout import StructLayout, _array_field, _scalar_kind
        try:
            t = btf.resolve(type_id)
            where = f"global {name}"
            if t.kind == Kind.STRUCT:
                self.layout = btf.struct_layout(t)
                self.kind = "struct"
            elif t.kind == Kind.ARRAY:
                f = _array_field(btf, t, name, 0, size, btf.type_str(type_id), where, 0)
                if f is not None:
                    self.field = f
                    self.kind = f.kind          # array, char_array or bytes
                    if f.kind == "array":
                        self.np_dtype = StructLayout._np_scalar(f.elem_kind, f.elem_size,
                                                                btf.byteorder)
            elif t.kind in (Kind.INT, Kind.ENUM, Kind.ENUM64, Kind.PTR, Kind.FLOAT):
                k = _scalar_kind(btf, t, where)
                if (k, size) in _CODES:
                    self.kind = k
        except BtfError:
            self.kind = "bytes"

    def decode(self, raw: bytes) -> Any:
        k = self.kind
        if (k, self.size) in _CODES:
            return struct.unpack("<" + _CODES[k, self.size], raw)[0]
        if k == "char_array":
            return raw.partition(b"\0")[0].decode("utf-8", "replace")
        if k == "array":
            import numpy as np
            assert self.field is not None
            return np.frombuffer(raw, self.np_dtype).reshape(self.field.shape).copy()
        if k == "struct":
            return self.layout.decode(raw, 0)
        return bytes(raw)

    def encode(self, value: Any, current: bytes) -> bytes:
        """``value`` as this variable's bytes (``current``: what is there now,
        for a partial struct update)."""
        k = self.kind
        name = self.name
        if isinstance(value, (bytes, bytearray, memoryview)) and k != "char_array":
            b = bytes(value)
            if len(b) != self.size:
                raise BadArgumentError(f"{name} is {self.size} bytes; got {len(b)}")
            return b
        if (k, self.size) in _CODES:
            return _pack_scalar(name, k, self.size, value)
        if k == "char_array":
            raw = value.encode() if isinstance(value, str) else value
            if not isinstance(raw, (bytes, bytearray)):
                raise BadTypeError(f"{name} is a char array: pass a str or bytes")
            if len(raw) >= self.size:
                raise BadArgumentError(f"{name} holds at most {self.size - 1} bytes "
                                       f"(plus a NUL); got {len(raw)}")
            return bytes(raw).ljust(self.size, b"\0")
        if k == "array":
            import numpy as np
            assert self.field is not None
            arr = np.asarray(value)
            if arr.size != self.field.count:
                raise BadArgumentError(f"{name} has {self.field.count} elements; got {arr.size}")
            return np.ascontiguousarray(arr, dtype=self.np_dtype).tobytes()
        if k == "struct":
            if hasattr(value, "_asdict"):
                value = value._asdict()
            if not isinstance(value, Mapping):
                raise BadTypeError(f"{name} is a struct: pass a dict of fields, a record or "
                                   f"bytes")
            buf = bytearray(current)
            for fname, v in value.items():
                f = self.layout.field(fname)
                sub = VarCodec(f"{name}.{fname}", f.size, None, 0)
                sub.kind, sub.field = f.kind, f
                if f.kind == "array":
                    sub.np_dtype = type(self.layout)._np_scalar(f.elem_kind, f.elem_size, "<")
                buf[f.offset:f.offset + f.size] = sub.encode(v, bytes(buf[f.offset:f.offset
                                                                          + f.size]))
            return bytes(buf)
        raise BadTypeError(f"{name} has no Python form here: pass bytes of size {self.size}")


def _pack_scalar(name: str, kind: str, size: int, value: Any) -> bytes:
    code = _CODES[kind, size]
    if kind == "float":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise BadTypeError(f"{name} is a float; got {type(value).__name__}")
        return struct.pack("<" + code, value)
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int):
        raise BadTypeError(f"{name} is a {size}-byte integer; got {type(value).__name__}")
    lo, hi = -(1 << (8 * size - 1)), (1 << (8 * size)) - 1
    if not lo <= value <= hi:
        raise BadArgumentError(f"{value} does not fit {name} ({size} bytes)")
    return value.to_bytes(size, "little", signed=value < 0)


def var_type_id(btf: Any, section: str, name: str) -> int:
    """The BTF type id of global ``name`` in data section ``section`` (0 if unknown)."""
    from .btf import BtfError, Kind
    try:
        ds = btf.find(section, Kind.DATASEC)
        if ds is None:
            return 0
        for si in ds.secinfo:
            v = btf.type(si.type_id)
            if v.kind == Kind.VAR and v.name == name:
                return int(v.type_id)
    except BtfError:
        return 0
    return 0


class _Section:
    """One data section's map: mmapped when the kernel allows."""

    def __init__(self, m: "Map", writable: bool) -> None:
        self.map = m
        self.writable = writable
        self.mem: Optional[mmap.mmap] = None
        if lib.bpf_map__map_flags(m._ptr) & BPF_F_MMAPABLE:
            size = (m.value_size + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            self.mem = mmap.mmap(m.fd, size, mmap.MAP_SHARED, prot)

    def read(self, off: int, size: int) -> bytes:
        if self.mem is not None:
            return self.mem[off:off + size]
        v = self.map.lookup(0)
        assert isinstance(v, bytes)
        return v[off:off + size]

    def write(self, off: int, raw: bytes) -> None:
        if self.mem is not None:
            self.mem[off:off + len(raw)] = raw
            return
        old = self.map[0]                       # not mmappable: read, modify, write back
        assert isinstance(old, bytes)
        cur = bytearray(old)
        cur[off:off + len(raw)] = raw
        self.map[0] = bytes(cur)

    def close(self) -> None:
        if self.mem is not None:
            try:
                self.mem.close()
            except BufferError:    # a numpy view is alive: the mapping lives until it dies
                pass
            self.mem = None


def _close_sections(sections: Dict[str, _Section]) -> None:
    for s in sections.values():
        s.close()
    sections.clear()


class Globals(Resource, Mapping[str, Any]):
    """``loaded.globals``: the object's global variables by name (see the module
    docstring).  Owned by the object: closed with it."""

    _what = "globals of a BPF object"

    def __init__(self, obj: "Object") -> None:
        self._obj = obj
        self._sections: Dict[str, _Section] = {}
        self._codecs: Dict[str, VarCodec] = {}
        self._own(_close_sections, self._sections)

    # -- lookup --------------------------------------------------------------------
    def _var(self, name: str) -> "Variable":
        v = self._obj.info.variables.get(name)
        if v is None:
            import difflib
            names = list(self._obj.info.variables)
            raise TargetNotFoundError("global variable", name,
                                      difflib.get_close_matches(name, names),
                                      detail="globals: " + (", ".join(sorted(names)) or "(none)"))
        return v

    def _codec(self, v: "Variable") -> VarCodec:
        c = self._codecs.get(v.name)
        if c is None:
            btf = self._obj.btf
            c = self._codecs[v.name] = VarCodec(v.name, v.size, btf,
                                                var_type_id(btf, v.section, v.name))
        return c

    def _section(self, section: str) -> _Section:
        self._check()
        s = self._sections.get(section)
        if s is None:
            for m in self._obj.maps.values():
                if lib.bpf_map__is_internal(m._ptr) and m.name.endswith(section):
                    s = _Section(m, writable=not section.startswith(".rodata"))
                    break
            else:
                raise TargetNotFoundError("data section", section)
            self._sections[section] = s
        return s

    # -- Mapping -------------------------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        v = self._var(name)
        return self._codec(v).decode(self._section(v.section).read(v.offset, v.size))

    def __iter__(self) -> Iterator[str]:
        return iter(self._obj.info.variables)

    def __len__(self) -> int:
        return len(self._obj.info.variables)

    def __contains__(self, name: object) -> bool:
        return name in self._obj.info.variables

    def __setitem__(self, name: str, value: Any) -> None:
        v = self._var(name)
        s = self._section(v.section)
        if not s.writable:
            raise BadArgumentError(f"{name} is in {v.section}, which is read-only after load "
                                   f"(libbpf freezes it); set it through OpenObject.config "
                                   f"before load")
        c = self._codec(v)
        s.write(v.offset, c.encode(value, s.read(v.offset, v.size)))

    def raw(self, name: str) -> bytes:
        """The variable's bytes as they are now."""
        v = self._var(name)
        return self._section(v.section).read(v.offset, v.size)

    def section_of(self, name: str) -> str:
        return self._var(name).section

    def view(self, name: str) -> Any:
        """A live numpy view of an array of numbers (its elements as the
        programs see them now and later; writable unless in .rodata).  The
        view keeps the mapping alive after the object closes."""
        v = self._var(name)
        c = self._codec(v)
        if c.kind != "array" or c.field is None:
            raise BadTypeError(f"{name} is not an array of numbers")
        s = self._section(v.section)
        if s.mem is None:
            raise BadArgumentError(f"the map of {v.section} is not mmappable on this kernel: "
                                   f"read {name} with globals[{name!r}]")
        import numpy as np
        arr = np.frombuffer(s.mem, c.np_dtype, count=c.field.count, offset=v.offset)
        if not s.writable:
            arr.flags.writeable = False
        return arr.reshape(c.field.shape)

    def items_now(self) -> List[Tuple[str, Any]]:
        """Every variable and its value now."""
        return [(n, self[n]) for n in self]

    def __repr__(self) -> str:
        return f"<Globals {list(self._obj.info.variables)}>"
