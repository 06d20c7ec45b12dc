"""Reading a BTF blob: header, record framing, string table, types by id.

:class:`Btf` parses a raw blob (or the ``.BTF`` section of an ELF file, or the
running kernel's vmlinux and module BTF, cached per process) and decodes a type
record into a :class:`~pytracers.btf.BtfType` on first use.  What a blob answers
beyond that is written in sibling modules and assigned in the class body below:
name look-ups (``names.py``), suggestions (``suggest.py``), the type graph and C
declarations (``graph.py``) and event layouts (``layout.py``).
"""
from __future__ import annotations

import array
import io
import operator
import os
import struct
import sys
from itertools import accumulate, repeat
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from ..errors import (BadArgumentError, BadTypeError, BtfDecodeError, BtfError,
                      BtfNotFoundError)
from . import graph as _graph
from . import layout as _layout
from . import names as _names
from . import suggest as _suggest
from .layout import StructLayout
from .types import (_REFERS, _SIZED, _U32, _VOID, ArrayInfo, BtfType, EnumValue, Kind, Member,
                    Param, VarSecinfo)

BTF_MAGIC = 0xEB9F
BTF_VERSION = 1
VMLINUX_PATH = "/sys/kernel/btf/vmlinux"
SYSFS_BTF_DIR = "/sys/kernel/btf"

_HEADER_MIN = 24          # sizeof(struct btf_header)

# Record layout: words after the 3-word header = fixed + per_vlen * vlen.
_REC_WORDS: Dict[int, Tuple[int, int]] = {
    Kind.INT: (4, 0), Kind.PTR: (3, 0), Kind.ARRAY: (6, 0), Kind.STRUCT: (3, 3),
    Kind.UNION: (3, 3), Kind.ENUM: (3, 2), Kind.FWD: (3, 0), Kind.TYPEDEF: (3, 0),
    Kind.VOLATILE: (3, 0), Kind.CONST: (3, 0), Kind.RESTRICT: (3, 0), Kind.FUNC: (3, 0),
    Kind.FUNC_PROTO: (3, 2), Kind.VAR: (4, 0), Kind.DATASEC: (3, 3), Kind.FLOAT: (3, 0),
    Kind.DECL_TAG: (4, 0), Kind.TYPE_TAG: (3, 0), Kind.ENUM64: (3, 3),
}
_REC_FIXED: Dict[int, int] = {k: v[0] for k, v in _REC_WORDS.items()}
_REC_PER: Dict[int, int] = {k: v[1] for k, v in _REC_WORDS.items()}


class _Header:
    """The fixed header of a blob, checked: magic (either byte order), version,
    and section offsets inside the data."""

    __slots__ = ("byteorder", "hdr_len", "type_off", "type_len", "str_off", "str_len", "flags")

    def __init__(self, data: bytes, label: str = "") -> None:
        if len(data) < 8:
            raise BtfDecodeError(label, f"BTF data too short for a header ({len(data)} bytes)")
        magic_le = data[0] | (data[1] << 8)
        if magic_le == BTF_MAGIC:
            bo = "<"
        elif magic_le == 0x9FEB:
            bo = ">"
        else:
            raise BtfDecodeError(label, f"bad BTF magic 0x{magic_le:04x} (expected 0xeb9f)")
        version, flags = data[2], data[3]
        if version != BTF_VERSION:
            raise BtfDecodeError(label, f"unsupported BTF version {version}")
        (hdr_len,) = struct.unpack_from(bo + "I", data, 4)
        if hdr_len < _HEADER_MIN:
            raise BtfDecodeError(label, f"BTF header length {hdr_len} < {_HEADER_MIN}")
        if hdr_len > len(data):
            raise BtfDecodeError(label, f"BTF header length {hdr_len} past the end of the data "
                                        f"({len(data)})")
        type_off, type_len, str_off, str_len = struct.unpack_from(bo + "4I", data, 8)
        body = len(data) - hdr_len
        if type_off + type_len > body:
            raise BtfDecodeError(label, f"BTF type section [{type_off}, +{type_len}) past the "
                                        f"end of the data ({body} bytes after the header)")
        if str_off + str_len > body:
            raise BtfDecodeError(label, f"BTF string section [{str_off}, +{str_len}) past the "
                                        f"end of the data ({body} bytes after the header)")
        if type_off % 4 or type_len % 4:
            raise BtfDecodeError(label, "BTF type section is not 4-byte aligned")
        if type_len and str_len and type_off < str_off + str_len and str_off < type_off + type_len:
            raise BtfDecodeError(label, "BTF type and string sections overlap")
        self.byteorder = bo
        self.flags = flags
        self.hdr_len = hdr_len
        self.type_off = type_off
        self.type_len = type_len
        self.str_off = str_off
        self.str_len = str_len


def _scan(w: "array.array[int]", label: str) -> Tuple[List[int], bytearray]:
    """First pass over the type section: where each record starts and its kind."""
    starts: List[int] = []
    kinds = bytearray()
    append = starts.append
    kappend = kinds.append
    fixed = _REC_FIXED
    per = _REC_PER
    n = len(w)
    i = 0
    k = 0
    try:
        while i < n:
            info = w[i + 1]
            k = (info >> 24) & 0x1F
            append(i)
            kappend(k)
            i += fixed[k] + per[k] * (info & 0xFFFF)
    except KeyError:
        raise BtfDecodeError(label, f"type id {len(starts)}: unknown BTF kind {k}") from None
    except IndexError:
        raise BtfDecodeError(label, f"type id {len(starts) + 1}: truncated type record") from None
    if i != n:
        raise BtfDecodeError(label, f"type id {len(starts)}: record runs past the end of the "
                                    "type section")
    return starts, kinds


_VMLINUX_CACHE: Dict[str, "Btf"] = {}
_MODULE_CACHE: Dict[Tuple[str, str], "Btf"] = {}


class Btf:
    """A parsed BTF blob (optionally split BTF on top of ``base``)."""

    def __init__(self, data: bytes, base: Optional["Btf"] = None, *, ptr_size: int = 8,
                 name: str = "") -> None:
        data = bytes(data)
        hdr = _Header(data, name)
        self.name = name
        self.base = base
        self.ptr_size = ptr_size
        self.start_id: int = 1
        self.end_id: int = 1
        self.start_str_off: int = 0
        self.end_str_off: int = 0
        self.byteorder: str = hdr.byteorder
        if base is not None and base.byteorder != hdr.byteorder:
            raise BtfError("split BTF and its base differ in byte order")
        body = hdr.hdr_len
        self._strs: bytes = data[body + hdr.str_off: body + hdr.str_off + hdr.str_len]
        if base is None:
            self.start_id = 1
            self.start_str_off = 0
            if self._strs and self._strs[0] != 0:
                raise self._damaged("BTF string section does not start with an empty string")
        else:
            self.start_id = base.end_id
            self.start_str_off = base.end_str_off
        if self._strs and self._strs[-1] != 0:
            raise self._damaged("BTF string section is not NUL-terminated")
        self.end_str_off = self.start_str_off + len(self._strs)

        words = array.array(_U32)
        words.frombytes(data[body + hdr.type_off: body + hdr.type_off + hdr.type_len])
        if (hdr.byteorder == "<") != (sys.byteorder == "little"):
            words.byteswap()
        self._w = words
        self._starts, self._kinds = _scan(words, name)
        self.end_id = self.start_id + len(self._starts)
        self._types: Dict[int, BtfType] = {}
        self._str_cache: Dict[int, str] = {}
        self._all_decoded = False
        self._packed_name_offs: Optional[bytes] = None
        self._by_name: Optional[Dict[str, List[int]]] = None
        self._lookups = 0
        self._names_by_kind: Dict[Tuple[int, bool], List[str]] = {}
        self._sorted_names: Dict[Tuple[int, bool], List[str]] = {}
        self._type_str_cache: Dict[int, str] = {}
        self._names_by_len: Dict[Tuple[int, bool], Dict[int, List[str]]] = {}

    # -- constructors -----------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes, base: Optional["Btf"] = None, *, ptr_size: int = 8,
                   name: str = "") -> "Btf":
        """Parse a raw BTF blob (as in /sys/kernel/btf/* or an ELF ``.BTF`` section)."""
        return cls(data, base, ptr_size=ptr_size, name=name)

    @classmethod
    def from_file(cls, path: Union[str, "os.PathLike[str]"], base: Optional["Btf"] = None) -> "Btf":
        """Parse a raw BTF file, or the ``.BTF`` section if ``path`` is an ELF file."""
        with open(path, "rb") as f:
            data = f.read()
        if data[:4] == b"\x7fELF":
            return cls.from_elf(data, base)
        return cls(data, base, name=os.fspath(path))

    @classmethod
    def from_elf(cls, path_or_bytes: Union[str, bytes, "os.PathLike[str]"],
                 base: Optional["Btf"] = None) -> "Btf":
        """Parse the ``.BTF`` section of an ELF file (e.g. our ``.bpf.o``)."""
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile
        if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
            raw = bytes(path_or_bytes)
            label = "<bytes>"
        else:
            with open(path_or_bytes, "rb") as f:
                raw = f.read()
            label = os.fspath(path_or_bytes)
        try:
            elf = ELFFile(io.BytesIO(raw))
            sec = elf.get_section_by_name(".BTF")
            if sec is None:
                raise BtfDecodeError(label, "no .BTF section (compile with -g)")
            if sec["sh_type"] == "SHT_NOBITS":
                raise BtfDecodeError(label, ".BTF section has no data")
            data = sec.data()
            ptr_size = 8 if elf.elfclass == 64 else 4
        except BtfError:
            raise
        except (ELFError, struct.error, ValueError, EOFError, OSError, KeyError, IndexError,
                TypeError, AttributeError, AssertionError) as e:
            raise BtfDecodeError(label, f"cannot read ELF: {e}") from e
        return cls(data, base, ptr_size=ptr_size, name=label)

    @classmethod
    def vmlinux(cls, path: str = VMLINUX_PATH) -> "Btf":
        """The running kernel's BTF (parsed once per process, then cached)."""
        btf = _VMLINUX_CACHE.get(path)
        if btf is None:
            btf = cls.from_file(path)
            btf.name = "vmlinux"
            _VMLINUX_CACHE[path] = btf
        return btf

    @classmethod
    def module(cls, name: str, *, sysfs_dir: str = SYSFS_BTF_DIR) -> "Btf":
        """A kernel module's BTF (split BTF on top of vmlinux; cached)."""
        if not name or "/" in name or name in (".", "..", "vmlinux"):
            raise BadArgumentError(f"bad module name {name!r}")
        key = (sysfs_dir, name)
        btf = _MODULE_CACHE.get(key)
        if btf is None:
            base = cls.vmlinux(os.path.join(sysfs_dir, "vmlinux"))
            path = os.path.join(sysfs_dir, name)
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                import difflib
                raise BtfNotFoundError(name, "module",
                                       difflib.get_close_matches(name, cls.module_names(sysfs_dir))
                                       ) from None
            btf = cls(data, base, name=name)
            _MODULE_CACHE[key] = btf
        return btf

    @staticmethod
    def module_names(sysfs_dir: str = SYSFS_BTF_DIR) -> List[str]:
        """Modules with BTF under /sys/kernel/btf (sorted)."""
        try:
            return sorted(n for n in os.listdir(sysfs_dir) if n != "vmlinux")
        except OSError:
            return []

    @staticmethod
    def clear_cache() -> None:
        """Forget cached vmlinux/module BTF (e.g. after a module reload)."""
        _VMLINUX_CACHE.clear()
        _MODULE_CACHE.clear()

    # -- low level ------------------------------------------------------------------

    def __repr__(self) -> str:
        what = f" {self.name!r}" if self.name else ""
        split = " split" if self.base is not None else ""
        return f"<Btf{what}{split} types {self.start_id}..{self.end_id - 1}>"

    def __len__(self) -> int:
        """Number of types in this blob (not counting void or the base's)."""
        return len(self._starts)

    @property
    def type_count(self) -> int:
        """Valid type ids are ``0 .. type_count-1`` (includes void and the base)."""
        return self.end_id

    def _damaged(self, problem: str) -> BtfDecodeError:
        """The error for data that cannot be right (named after this blob)."""
        return BtfDecodeError(self.name, problem)

    def _str(self, off: int) -> str:
        s = self._str_cache.get(off)
        if s is not None:
            return s
        if off == 0:
            return ""
        if off < self.start_str_off:
            assert self.base is not None
            return self.base._str(off)
        rel = off - self.start_str_off
        strs = self._strs
        if rel >= len(strs):
            raise self._damaged(f"string offset {off} out of range (strings end at "
                                f"{self.end_str_off})")
        end = strs.find(b"\0", rel)  # always found: the section ends with NUL
        s = strs[rel:end].decode("utf-8", "replace")
        self._str_cache[off] = s
        return s

    def _all_strings(self) -> Dict[int, str]:
        """Every string of the section by its offset, decoded in one pass (cached).

        Also becomes the string cache, so later name look-ups are dict hits.
        """
        cache = self._str_cache
        if not self._all_decoded:
            strs = self._strs[:-1]  # drop the final NUL so split() yields no empty tail
            if strs.isascii():
                parts: List[str] = strs.decode("ascii").split("\0")
            else:
                parts = [p.decode("utf-8", "replace") for p in strs.split(b"\0")]
            offsets = accumulate(map(operator.add, map(len, parts), repeat(1)),
                                 initial=self.start_str_off)
            new = dict(zip(offsets, parts))
            new.update(cache)
            self._str_cache = cache = new
            self._all_decoded = True
        return cache

    def _check_id(self, type_id: int) -> None:
        if not 0 <= type_id < self.end_id:
            raise BtfError(f"type id {type_id} out of range (0..{self.end_id - 1})")

    def _owner(self, type_id: int) -> "Btf":
        b: Btf = self
        while type_id < b.start_id and b.base is not None:
            b = b.base
        return b

    def kind_of(self, type_id: int) -> Kind:
        """The kind of ``type_id`` without decoding the type."""
        self._check_id(type_id)
        if type_id == 0:
            return Kind.VOID
        b = self._owner(type_id)
        return Kind(b._kinds[type_id - b.start_id])

    def name_of(self, type_id: int) -> str:
        """The name of ``type_id`` without decoding the rest of the type."""
        self._check_id(type_id)
        if type_id == 0:
            return "void"
        b = self._owner(type_id)
        return b._str(b._w[b._starts[type_id - b.start_id]])

    def type(self, type_id: Union[int, BtfType]) -> BtfType:
        """The type with id ``type_id`` (0 is void)."""
        if isinstance(type_id, BtfType):
            return type_id
        if not isinstance(type_id, int):
            raise BadTypeError(f"type id must be an int, not {type(type_id).__name__}")
        t = self._types.get(type_id)
        if t is not None:
            return t
        self._check_id(type_id)
        if type_id == 0:
            return _VOID
        if type_id < self.start_id:
            assert self.base is not None
            return self.base.type(type_id)
        t = self._decode(type_id)
        self._types[type_id] = t
        return t

    def _decode(self, tid: int) -> BtfType:
        """Decode record ``tid``.  One that refers to a type id past the end is
        damaged, so every type handed out refers only to ids that exist (and an
        id out of range can only be the caller's)."""
        w = self._w
        s = self._starts[tid - self.start_id]
        name_off, info, st = w[s], w[s + 1], w[s + 2]
        kind = Kind((info >> 24) & 0x1F)
        vlen = info & 0xFFFF
        kflag = bool(info >> 31)
        name = self._str(name_off)
        p = s + 3
        kw: Dict[str, Any] = {}
        hi = 0                  # the highest type id the record refers to
        if kind in _SIZED:
            kw["size"] = st
        elif kind in _REFERS:
            kw["type_id"] = hi = st
        if kind == Kind.INT:
            enc = w[p]
            kw["int_encoding"] = (enc >> 24) & 0x0F
            kw["int_offset"] = (enc >> 16) & 0xFF
            kw["int_bits"] = enc & 0xFF
        elif kind == Kind.ARRAY:
            kw["array"] = ArrayInfo(w[p], w[p + 1], w[p + 2])
            hi = max(w[p], w[p + 1])
        elif kind in (Kind.STRUCT, Kind.UNION):
            ms = []
            for j in range(vlen):
                q = p + 3 * j
                off = w[q + 2]
                if kflag:
                    ms.append(Member(self._str(w[q]), w[q + 1], off & 0xFFFFFF, off >> 24))
                else:
                    ms.append(Member(self._str(w[q]), w[q + 1], off, 0))
            kw["members"] = tuple(ms)
            if vlen:
                hi = max(w[p + 1:p + 3 * vlen:3])
        elif kind == Kind.ENUM:
            evs = []
            for j in range(vlen):
                q = p + 2 * j
                v = w[q + 1]
                if kflag and v >= 0x80000000:
                    v -= 1 << 32
                evs.append(EnumValue(self._str(w[q]), v))
            kw["enum_values"] = tuple(evs)
        elif kind == Kind.ENUM64:
            evs = []
            for j in range(vlen):
                q = p + 3 * j
                v = w[q + 1] | (w[q + 2] << 32)
                if kflag and v >= 1 << 63:
                    v -= 1 << 64
                evs.append(EnumValue(self._str(w[q]), v))
            kw["enum_values"] = tuple(evs)
        elif kind == Kind.FUNC_PROTO:
            kw["params"] = tuple(Param(self._str(w[p + 2 * j]), w[p + 2 * j + 1])
                                 for j in range(vlen))
            if vlen:
                hi = max(hi, max(w[p + 1:p + 2 * vlen:2]))
        elif kind == Kind.FUNC:
            kw["linkage"] = vlen
        elif kind == Kind.VAR:
            kw["linkage"] = w[p]
        elif kind == Kind.DATASEC:
            kw["secinfo"] = tuple(VarSecinfo(w[p + 3 * j], w[p + 3 * j + 1], w[p + 3 * j + 2])
                                  for j in range(vlen))
            if vlen:
                hi = max(w[p:p + 3 * vlen:3])
        elif kind == Kind.DECL_TAG:
            c = w[p]
            kw["component_idx"] = c - (1 << 32) if c >= 0x80000000 else c
        if hi >= self.end_id:
            raise self._damaged(f"type id {tid} ({kind.label} {name!r}) refers to type id {hi}, "
                                f"out of range (0..{self.end_id - 1})")
        return BtfType(id=tid, kind=kind, name=name, kind_flag=kflag, vlen=vlen, **kw)

    def types(self, *, include_base: bool = False) -> Iterator[BtfType]:
        """Every type in id order (this blob's own, or from id 1 with the base's)."""
        first = 1 if include_base else self.start_id
        for tid in range(first, self.end_id):
            yield self.type(tid)

    # The rest is written in sibling modules, one per concern, as functions
    # whose ``self`` is the Btf; assigning them here keeps one class with one
    # API, and keeps them plain methods (no wrapper call).

    # -- names (names.py, suggest.py) -----------------------------------------------------

    _ids_with_name_off = _names._ids_with_name_off
    _build_name_dict = _names._build_name_dict
    _str_offsets = _names._str_offsets
    _find_ids = _names._find_ids
    find_all = _names.find_all
    _ids_of_kind = _names._ids_of_kind
    find = _names.find
    has = _names.has
    get = _names.get
    names = _names.names
    _name_list = _names._name_list
    functions = _names.functions
    suggest = _suggest.suggest

    # -- type graph and C declarations (graph.py) -----------------------------------------

    resolve = _graph.resolve
    strip_qualifiers = _graph.strip_qualifiers
    size_of = _graph.size_of
    _size_of = _graph._size_of
    type_str = _graph.type_str
    _base_name = _graph._base_name
    _decl = _graph._decl
    _param_list = _graph._param_list
    func = _graph.func
    func_proto = _graph.func_proto

    # -- layouts (layout.py) --------------------------------------------------------------

    def struct_layout(self, name: Union[str, int, BtfType]) -> StructLayout:
        """The flattened layout of struct ``name`` (a name, type id or BtfType).

        A name is looked up as a STRUCT first, then as a TYPEDEF of a struct.
        """
        return _layout.struct_layout(self, name)

    # -- validation (graph.py) ------------------------------------------------------------

    validate = _graph.validate
