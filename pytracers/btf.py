"""A pure-Python reader for BTF, the BPF Type Format.

Two uses in pytracers:

* Event layouts.  The struct a BPF program writes into a ring buffer is read
  from the ``.BTF`` section of our own compiled ``.bpf.o`` object
  (:meth:`Btf.from_elf`, :meth:`Btf.struct_layout`), so no struct is declared
  twice.  :class:`StructLayout` turns it into a precompiled :class:`struct.Struct`,
  a numpy structured dtype and a fast per-event decoder.
* Kernel types.  ``/sys/kernel/btf/vmlinux`` (:meth:`Btf.vmlinux`) and module
  BTF (:meth:`Btf.module`, split BTF on top of vmlinux) answer: which functions
  exist (:meth:`Btf.functions`, glob), what a function's prototype is
  (:meth:`Btf.func_proto`), does a struct exist (:meth:`Btf.find`), and what
  did the user probably mean (:meth:`Btf.suggest`).

Format reference: the kernel's Documentation/bpf/btf.rst.  A BTF blob is a
header (magic 0xeB9F, version 1, hdr_len, then type/string section offsets
relative to the end of the header), a type section of variable-length records
(``name_off, info, size|type`` followed by kind-specific data) and a string
section of NUL-terminated strings.  Type id 0 is ``void``; the first record
is id 1.  Split BTF (kernel modules) continues the id space and the string
offset space of its base (vmlinux).

Design notes
------------
* Parsing is lazy.  :class:`Btf` copies the type section once into a native
  ``array`` of 32-bit words (byte-swapped if needed) and walks it once,
  recording for every type only where its record starts and its kind.  A
  :class:`BtfType` is decoded on first use and cached; names are decoded from
  the string section on demand and cached (listing a kind's names decodes the
  whole section in one ``split``).  A name look-up searches the string section
  for ``name\\0`` and the packed name offsets of all types for the offsets
  found (both C-speed bytes searches), so a single look-up decodes no other
  name; after many look-ups on one blob a full name -> ids dict is built.
* Type ids and kinds may be given as ``int``/:class:`Kind` or as lower-case
  names (``"struct"``, ``"func"``).  A split blob answers for its base's ids
  too; :meth:`Btf.functions` and :meth:`Btf.names` list only the blob's own
  types unless ``include_base=True``, :meth:`Btf.find` searches base first.
* Byte order: the magic is accepted in either byte order.  A blob written on
  a machine of the other byte order is parsed correctly (its words are
  byte-swapped on load), and layouts made from it decode data in *that* byte
  order (:attr:`Btf.byteorder`), which is the byte order of the BPF target
  that produced the object.
* Errors: BTF errors derive from :class:`BtfError`, a ``PytracersError``
  (the classes live in :mod:`pytracers.errors` and are re-exported here);
  never ``IndexError``/``struct.error``/``RecursionError``.  Bytes that cannot
  be right (bad magic, truncation, unknown kinds, string offsets out of range,
  cycles in the type graph, a FUNC without its FUNC_PROTO) raise
  :class:`BtfDecodeError`, also an ``InvalidObjectError``.  A name that is not
  there raises :class:`BtfNotFoundError` (also a ``KeyError``), a layout we do
  not handle (bitfields, unions at top level) :class:`BtfUnsupportedError`
  (also a ``ValueError``), a type id out of range or the size of a type that
  has none :class:`BtfError` itself.  An unknown kind name or a type id that
  is not an int raise ``BadArgumentError`` / ``BadTypeError`` (a
  ``ValueError`` / ``TypeError``, as before).
* Pointers are assumed to be 8 bytes (BPF is a 64-bit target) unless the ELF
  file given to :meth:`Btf.from_elf` is 32-bit; see :attr:`Btf.ptr_size`.

Event layout rules (:meth:`Btf.struct_layout`)
----------------------------------------------
* Nested structs are flattened: their leaf members become fields named with
  a dotted path (``"key.pid"``).  Members of an anonymous nested struct are
  promoted without a prefix, as C does.
* A union member becomes a single ``"bytes"`` field holding its raw bytes
  (an anonymous union is named ``_anon_<offset>``).  A struct whose top-level
  type is a union is rejected.
* Field kinds: ``"int"``/``"uint"`` (integers and enums, by signedness),
  ``"bool"``, ``"float"``, ``"ptr"`` (an unsigned integer holding an address),
  ``"char_array"`` (a one-dimensional array of plain ``char``: decoded to
  ``str`` cut at the first NUL, UTF-8 with ``errors="replace"``),
  ``"bytes"`` (arrays of other one-byte integers such as ``u8``/``__u8``,
  unions, arrays of structs and anything else opaque: decoded to ``bytes``)
  and ``"array"`` (arrays of numbers: decoded to a flat tuple; the numpy
  dtype keeps the shape).
* Bitfields are rejected with :class:`BtfUnsupportedError`.  Zero-length
  (flexible) arrays are left out.
* Records (:meth:`StructLayout.record_class`) are tuple subclasses; a field
  ``a.b`` is the attribute ``a_b`` and keeps its dotted name in ``_fields`` /
  ``_asdict()``.
"""
from __future__ import annotations

import array
import difflib
import fnmatch
import heapq
from itertools import accumulate, compress, repeat
import io
import keyword
import operator
import os
import re
import struct
import sys
from enum import IntEnum
from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence,
                    Set, Tuple, Type, Union)

from .errors import (BadArgumentError, BadTypeError, BtfDecodeError, BtfError,
                     BtfNotFoundError, BtfUnsupportedError)

if TYPE_CHECKING:  # pragma: no cover
    import numpy

__all__ = [
    "BTF_MAGIC", "VMLINUX_PATH", "SYSFS_BTF_DIR",
    "BtfError", "BtfNotFoundError", "BtfUnsupportedError", "BtfDecodeError",
    "Kind", "KindLike", "Member", "EnumValue", "Param", "VarSecinfo", "ArrayInfo", "BtfType",
    "FuncProto", "Field", "StructLayout", "Record", "Btf",
    "INT_SIGNED", "INT_CHAR", "INT_BOOL",
]

BTF_MAGIC = 0xEB9F
BTF_VERSION = 1
VMLINUX_PATH = "/sys/kernel/btf/vmlinux"
SYSFS_BTF_DIR = "/sys/kernel/btf"

INT_SIGNED = 1
INT_CHAR = 2
INT_BOOL = 4

_HEADER_MIN = 24          # sizeof(struct btf_header)
_MAX_DEPTH = 96           # deepest type chain we follow before calling it a cycle
_STR_CACHE_MAX = 4096     # per char-array field, in decoders
_FULL_INDEX_AFTER = 64    # name look-ups on one Btf before building a full name dict


class Kind(IntEnum):
    """BTF kinds (``BTF_KIND_*``); ``VOID`` is type id 0."""

    VOID = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19

    @property
    def label(self) -> str:
        """Lower-case name as used in the API: "struct", "func_proto", ..."""
        return self.name.lower()


KindLike = Union[Kind, int, str]

_KIND_ALIASES: Dict[str, Kind] = {k.name.lower(): k for k in Kind}
_KIND_ALIASES.update({"function": Kind.FUNC, "fn": Kind.FUNC, "proto": Kind.FUNC_PROTO,
                      "pointer": Kind.PTR})

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

_MODIFIERS = frozenset({Kind.TYPEDEF, Kind.CONST, Kind.VOLATILE, Kind.RESTRICT, Kind.TYPE_TAG})
_QUALIFIERS = {Kind.CONST: "const", Kind.VOLATILE: "volatile", Kind.RESTRICT: "restrict"}
_SIZED = frozenset({Kind.INT, Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64, Kind.FLOAT,
                    Kind.DATASEC})
# kinds whose third word is a type id that must be valid
_REFERS = frozenset({Kind.PTR, Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT,
                     Kind.FUNC, Kind.FUNC_PROTO, Kind.VAR, Kind.DECL_TAG, Kind.TYPE_TAG})

_FUNC_LINKAGE = {0: "static", 1: "global", 2: "extern"}
_VAR_LINKAGE = {0: "static", 1: "global", 2: "extern"}


def _u32_typecode() -> str:
    for code in ("I", "L"):
        if array.array(code).itemsize == 4:
            return code
    raise ImportError("no 32-bit array typecode on this platform")  # pragma: no cover


_U32 = _u32_typecode()


# --------------------------------------------------------------------------- types
#
# The value classes below are written out rather than made by ``dataclasses``:
# importing it, and building the classes with it, was a large part of the
# import time of every tracer.
# They behave as the frozen dataclasses they replace: positional or keyword
# construction, a ``Name(field=value, ...)`` repr, ``==`` and ``hash`` over the
# compared fields (instances of the same class only), ``__match_args__``, and
# assigning or deleting a field raises ``dataclasses.FrozenInstanceError``.
# ``_key`` gets the compared fields; ``__match_args__`` lists all of them.

_set = object.__setattr__


class _Value:
    """Base of the value classes: subclasses set ``__match_args__`` (all
    fields, in order), ``__slots__`` and ``_key`` (the compared fields)."""

    __slots__ = ()
    __match_args__: Tuple[str, ...] = ()
    _key: Callable[[Any], Any]

    def __setattr__(self, name: str, value: Any) -> None:
        from dataclasses import FrozenInstanceError   # imported only on misuse
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        from dataclasses import FrozenInstanceError
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__match_args__)
        return f"{type(self).__qualname__}({inner})"

    def __eq__(self, other: Any) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool(self._key(self) == other._key(other))

    def __hash__(self) -> int:
        # FuncProto: TypeError, as for the dataclass (``params`` is a list)
        return hash(self._key(self))

    def __reduce__(self) -> Any:
        # the default reduction of a __slots__ class restores with setattr (refused)
        return (type(self), tuple(getattr(self, n) for n in self.__match_args__))


class Member(_Value):
    """A struct/union member.  ``bitfield_size`` is 0 for ordinary members."""

    __match_args__ = ("name", "type_id", "bit_offset", "bitfield_size")
    __slots__ = __match_args__
    _key = operator.attrgetter(*__match_args__)
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int

    def __init__(self, name: str, type_id: int, bit_offset: int, bitfield_size: int = 0) -> None:
        _set(self, "name", name)
        _set(self, "type_id", type_id)
        _set(self, "bit_offset", bit_offset)
        _set(self, "bitfield_size", bitfield_size)


    @property
    def offset(self) -> int:
        """Byte offset (floor of the bit offset)."""
        return self.bit_offset // 8


class EnumValue(_Value):
    """One enumerator of an ENUM or ENUM64 (``value`` signed if the enum is)."""

    __match_args__ = ("name", "value")
    __slots__ = __match_args__
    _key = operator.attrgetter(*__match_args__)
    name: str
    value: int

    def __init__(self, name: str, value: int) -> None:
        _set(self, "name", name)
        _set(self, "value", value)



class Param(_Value):
    """A FUNC_PROTO parameter; a trailing ``Param("", 0)`` means varargs."""

    __match_args__ = ("name", "type_id")
    __slots__ = __match_args__
    _key = operator.attrgetter(*__match_args__)
    name: str
    type_id: int

    def __init__(self, name: str, type_id: int) -> None:
        _set(self, "name", name)
        _set(self, "type_id", type_id)



class VarSecinfo(_Value):
    """One variable of a DATASEC."""

    __match_args__ = ("type_id", "offset", "size")
    __slots__ = __match_args__
    _key = operator.attrgetter(*__match_args__)
    type_id: int
    offset: int
    size: int

    def __init__(self, type_id: int, offset: int, size: int) -> None:
        _set(self, "type_id", type_id)
        _set(self, "offset", offset)
        _set(self, "size", size)



class ArrayInfo(_Value):
    """An ARRAY: element type, index type and number of elements."""

    __match_args__ = ("type_id", "index_type_id", "nelems")
    __slots__ = __match_args__
    _key = operator.attrgetter(*__match_args__)
    type_id: int        # element type
    index_type_id: int
    nelems: int

    def __init__(self, type_id: int, index_type_id: int, nelems: int) -> None:
        _set(self, "type_id", type_id)
        _set(self, "index_type_id", index_type_id)
        _set(self, "nelems", nelems)



class BtfType(_Value):
    """One decoded BTF type.

    Fields not used by a kind keep their defaults.  ``size`` is set for INT,
    STRUCT, UNION, ENUM, ENUM64, FLOAT and DATASEC; ``type_id`` for PTR,
    TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG, FUNC (its FUNC_PROTO),
    FUNC_PROTO (the return type), VAR and DECL_TAG.
    """

    __match_args__ = ("id", "kind", "name", "kind_flag", "vlen", "size", "type_id",
                      "int_encoding", "int_offset", "int_bits", "array", "members",
                      "enum_values", "params", "secinfo", "linkage", "component_idx")
    __slots__ = __match_args__
    _key = operator.attrgetter(*__match_args__)
    id: int
    kind: Kind
    name: str
    kind_flag: bool
    vlen: int
    size: int
    type_id: int
    int_encoding: int          # INT: INT_SIGNED | INT_CHAR | INT_BOOL
    int_offset: int            # INT: bit offset (0 in practice)
    int_bits: int              # INT: number of bits
    array: Optional[ArrayInfo]
    members: Tuple[Member, ...]
    enum_values: Tuple[EnumValue, ...]
    params: Tuple[Param, ...]
    secinfo: Tuple[VarSecinfo, ...]
    linkage: int               # FUNC and VAR
    component_idx: int         # DECL_TAG: -1 = the type itself, else member/param index

    def __init__(self, id: int, kind: Kind, name: str = "", kind_flag: bool = False,
                 vlen: int = 0, size: int = 0, type_id: int = 0, int_encoding: int = 0,
                 int_offset: int = 0, int_bits: int = 0, array: Optional[ArrayInfo] = None,
                 members: Tuple[Member, ...] = (), enum_values: Tuple[EnumValue, ...] = (),
                 params: Tuple[Param, ...] = (), secinfo: Tuple[VarSecinfo, ...] = (),
                 linkage: int = 0, component_idx: int = -1) -> None:
        _set(self, "id", id)
        _set(self, "kind", kind)
        _set(self, "name", name)
        _set(self, "kind_flag", kind_flag)
        _set(self, "vlen", vlen)
        _set(self, "size", size)
        _set(self, "type_id", type_id)
        _set(self, "int_encoding", int_encoding)
        _set(self, "int_offset", int_offset)
        _set(self, "int_bits", int_bits)
        _set(self, "array", array)
        _set(self, "members", members)
        _set(self, "enum_values", enum_values)
        _set(self, "params", params)
        _set(self, "secinfo", secinfo)
        _set(self, "linkage", linkage)
        _set(self, "component_idx", component_idx)


    @property
    def kind_name(self) -> str:
        return self.kind.label

    @property
    def signed(self) -> bool:
        """INT: has the SIGNED encoding bit; ENUM/ENUM64: the kind flag says signed."""
        if self.kind == Kind.INT:
            return bool(self.int_encoding & INT_SIGNED)
        if self.kind in (Kind.ENUM, Kind.ENUM64):
            return self.kind_flag
        return False

    @property
    def is_char(self) -> bool:
        return self.kind == Kind.INT and (bool(self.int_encoding & INT_CHAR) or self.name == "char")

    @property
    def is_bool(self) -> bool:
        return self.kind == Kind.INT and bool(self.int_encoding & INT_BOOL)

    @property
    def is_varargs(self) -> bool:
        """FUNC_PROTO ending in ``...``."""
        return (self.kind == Kind.FUNC_PROTO and bool(self.params)
                and self.params[-1].type_id == 0 and self.params[-1].name == "")

    @property
    def is_fwd_union(self) -> bool:
        return self.kind == Kind.FWD and self.kind_flag

    @property
    def linkage_name(self) -> str:
        if self.kind == Kind.FUNC:
            return _FUNC_LINKAGE.get(self.linkage, str(self.linkage))
        if self.kind == Kind.VAR:
            return _VAR_LINKAGE.get(self.linkage, str(self.linkage))
        return ""

    def member(self, name: str) -> Optional[Member]:
        """The direct member ``name`` of a struct/union, or None."""
        for m in self.members:
            if m.name == name:
                return m
        return None


_VOID = BtfType(id=0, kind=Kind.VOID, name="void")


class FuncProto(_Value):
    """A function's prototype as C-ish strings (plus the raw type ids)."""

    __match_args__ = ("name", "params", "ret", "varargs", "linkage", "param_type_ids",
                      "ret_type_id", "decl")
    __slots__ = __match_args__
    _key = operator.attrgetter(*__match_args__[:-1])   # ``decl`` is not compared
    name: str
    params: List[Tuple[str, str]]      # (parameter name, type string)
    ret: str                           # return type string
    varargs: bool
    linkage: str
    param_type_ids: Tuple[int, ...]
    ret_type_id: int
    decl: str                          # the full C declaration, with parameter names

    def __init__(self, name: str, params: List[Tuple[str, str]], ret: str,
                 varargs: bool = False, linkage: str = "static",
                 param_type_ids: Tuple[int, ...] = (), ret_type_id: int = 0,
                 decl: str = "") -> None:
        _set(self, "name", name)
        _set(self, "params", params)
        _set(self, "ret", ret)
        _set(self, "varargs", varargs)
        _set(self, "linkage", linkage)
        _set(self, "param_type_ids", param_type_ids)
        _set(self, "ret_type_id", ret_type_id)
        _set(self, "decl", decl)


    def __str__(self) -> str:
        if self.decl:
            return self.decl
        parts = [_join_decl(t, n) for n, t in self.params]
        if self.varargs:
            parts.append("...")
        args = ", ".join(parts) if parts else "void"
        return f"{_join_decl(self.ret, self.name)}({args})"


def _join_decl(type_str: str, name: str) -> str:
    if not name:
        return type_str
    if type_str.endswith("*"):
        return type_str + name
    return f"{type_str} {name}"


# --------------------------------------------------------------------------- layouts

_SCALAR_KINDS = ("int", "uint", "bool", "float", "ptr")


class Field(_Value):
    """One field of a :class:`StructLayout`.

    ``count`` is the number of elements for arrays, chars for ``char_array``
    and bytes for ``bytes`` (1 for scalars).  For ``array`` fields
    ``elem_kind``/``elem_size`` describe one element and ``shape`` the
    dimensions.  ``int128`` integers are ``int``/``uint`` of size 16.
    """

    __match_args__ = ("name", "offset", "size", "kind", "count", "elem_kind", "elem_size",
                      "shape", "type_name")
    __slots__ = __match_args__
    _key = operator.attrgetter(*__match_args__)
    name: str
    offset: int
    size: int
    kind: str
    count: int
    elem_kind: str
    elem_size: int
    shape: Tuple[int, ...]
    type_name: str

    def __init__(self, name: str, offset: int, size: int, kind: str, count: int = 1,
                 elem_kind: str = "", elem_size: int = 0, shape: Tuple[int, ...] = (),
                 type_name: str = "") -> None:
        _set(self, "name", name)
        _set(self, "offset", offset)
        _set(self, "size", size)
        _set(self, "kind", kind)
        _set(self, "count", count)
        _set(self, "elem_kind", elem_kind)
        _set(self, "elem_size", elem_size)
        _set(self, "shape", shape)
        _set(self, "type_name", type_name)



class Record(Tuple[Any, ...]):
    """Base of the classes made by :meth:`StructLayout.record_class`.

    A tuple subclass: build one with ``Cls(iterable)`` or ``Cls._make(iterable)``;
    fields are attributes (dots in nested names become underscores) and
    ``_asdict()`` maps the real (dotted) field names to values.
    """

    __slots__ = ()
    _fields: Tuple[str, ...] = ()

    if TYPE_CHECKING:  # fields are properties made at run time
        def __getattr__(self, name: str) -> Any: ...

    @classmethod
    def _make(cls, iterable: Any) -> Any:
        return cls(iterable)

    def _asdict(self) -> Dict[str, Any]:
        return dict(zip(self._fields, self))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={v!r}" for n, v in zip(self._fields, self))
        return f"{type(self).__name__}({inner})"

    def __reduce__(self) -> Any:
        return (_rebuild_record, (self._layout_key(), tuple(self)))

    @classmethod
    def _layout_key(cls) -> Tuple[str, Tuple[str, ...]]:
        return (cls.__name__, cls._fields)


def _rebuild_record(key: Tuple[str, Tuple[str, ...]], values: Tuple[Any, ...]) -> Any:
    # Records pickle as plain (name, fields, values); rebuild a compatible class.
    name, fields = key
    cls = _make_record_class(name, fields)
    return cls(values)


_RECORD_CLASS_CACHE: Dict[Tuple[str, Tuple[str, ...]], Type[Record]] = {}


def _attr_name(field_name: str) -> str:
    return field_name.replace(".", "_")


def _make_record_class(name: str, fields: Tuple[str, ...]) -> Type[Record]:
    key = (name, fields)
    cls = _RECORD_CLASS_CACHE.get(key)
    if cls is not None:
        return cls
    from operator import itemgetter
    ns: Dict[str, Any] = {"__slots__": (), "_fields": fields, "__doc__": f"Record of struct {name}"}
    reserved = set(dir(Record))
    for i, f in enumerate(fields):
        attr = _attr_name(f)
        if not attr.isidentifier() or keyword.iskeyword(attr) or attr in ns or attr in reserved:
            continue
        ns[attr] = property(itemgetter(i), doc=f"field {f}")
    cls_name = name if name.isidentifier() and not keyword.iskeyword(name) else "Record_"
    cls = type(cls_name, (Record,), ns)
    _RECORD_CLASS_CACHE[key] = cls
    return cls


def _decode_cstr(raw: bytes) -> str:
    return raw.partition(b"\0")[0].decode("utf-8", "replace")


_INT_CODES = {1: "b", 2: "h", 4: "i", 8: "q"}
_UINT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}
_FLOAT_CODES = {2: "e", 4: "f", 8: "d"}


def _scalar_code(kind: str, size: int) -> Optional[str]:
    """struct code for a scalar field, or None if it needs bytes + post-processing."""
    if kind == "int":
        return _INT_CODES.get(size)
    if kind in ("uint", "ptr"):
        return _UINT_CODES.get(size)
    if kind == "bool":
        return "?" if size == 1 else _UINT_CODES.get(size)
    if kind == "float":
        return _FLOAT_CODES.get(size)
    return None


class StructLayout:
    """The byte layout of a struct, ready to decode events.

    ``fields`` are in offset order; ``size`` is the struct size; ``byteorder``
    is ``"<"`` or ``">"``.  See the module docstring for the field rules.
    """

    def __init__(self, name: str, size: int, fields: Sequence[Field], byteorder: str = "<",
                 type_id: int = 0) -> None:
        self.name = name
        self.size = size
        self.fields: Tuple[Field, ...] = tuple(fields)
        self.byteorder = byteorder
        self.type_id = type_id
        self._struct: Optional[struct.Struct] = None
        self._record_class: Optional[Type[Record]] = None
        self._decoder: Optional[Callable[..., Any]] = None
        self._check()

    def __repr__(self) -> str:
        return f"StructLayout({self.name!r}, size={self.size}, fields={len(self.fields)})"

    def _check(self) -> None:
        end = 0
        seen = set()
        for f in self.fields:
            if f.offset < end:
                raise BtfError(f"struct {self.name}: field {f.name} at offset {f.offset} "
                               f"overlaps the previous field (ends at {end})")
            end = f.offset + f.size
            if f.name in seen:
                raise BtfError(f"struct {self.name}: duplicate field name {f.name!r}")
            seen.add(f.name)
        if end > self.size:
            raise BtfError(f"struct {self.name}: fields end at {end}, past its size {self.size}")

    @property
    def field_names(self) -> Tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> Field:
        """The field named ``name``; :class:`~pytracers.errors.BtfNotFoundError`
        (a ``KeyError``) if there is none."""
        for f in self.fields:
            if f.name == name:
                return f
        raise BtfNotFoundError(name, "field", where=f"struct {self.name}")

    # -- struct.Struct ------------------------------------------------------------

    @property
    def format(self) -> str:
        """The :mod:`struct` format of the whole struct, with explicit padding."""
        parts = [self.byteorder]
        pos = 0
        for f in self.fields:
            if f.offset > pos:
                parts.append(f"{f.offset - pos}x")
            parts.append(self._field_format(f))
            pos = f.offset + f.size
        if self.size > pos:
            parts.append(f"{self.size - pos}x")
        return "".join(parts)

    @staticmethod
    def _field_format(f: Field) -> str:
        if f.kind in _SCALAR_KINDS:
            code = _scalar_code(f.kind, f.size)
            return code if code else f"{f.size}s"
        if f.kind == "array":
            code = _scalar_code(f.elem_kind, f.elem_size)
            if code is None:  # pragma: no cover - layouts only make arrays of codable scalars
                raise BtfUnsupportedError(f"array field {f.name}: no struct code")
            return f"{f.count}{code}"
        return f"{f.size}s"  # char_array, bytes

    @property
    def struct(self) -> struct.Struct:
        if self._struct is None:
            s = struct.Struct(self.format)
            if s.size != self.size:  # pragma: no cover - guaranteed by construction
                raise BtfError(f"struct {self.name}: format size {s.size} != {self.size}")
            self._struct = s
        return self._struct

    # -- numpy --------------------------------------------------------------------

    def numpy_dtype(self) -> "numpy.dtype[Any]":
        """A structured dtype with explicit offsets and ``itemsize == size``.

        Field names are the (dotted) field names; char arrays are ``S<n>``
        (numpy strips trailing NULs only: bytes after the first NUL stay),
        ``bytes`` fields ``u1`` sub-arrays, number arrays sub-arrays with the
        C shape, 16-byte integers ``V16``.
        """
        import numpy as np
        bo = self.byteorder
        names: List[str] = []
        formats: List[Any] = []
        offsets: List[int] = []
        for f in self.fields:
            fmt: Any
            if f.kind in _SCALAR_KINDS:
                fmt = self._np_scalar(f.kind, f.size, bo)
            elif f.kind == "array":
                fmt = (self._np_scalar(f.elem_kind, f.elem_size, bo), f.shape)
            elif f.kind == "char_array":
                fmt = f"S{f.size}"
            else:
                fmt = ("u1", (f.size,))
            names.append(f.name)
            formats.append(fmt)
            offsets.append(f.offset)
        return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                         "itemsize": self.size})

    @staticmethod
    def _np_scalar(kind: str, size: int, bo: str) -> str:
        if kind == "bool" and size == 1:
            return "?"
        if kind in ("int",) and size in (1, 2, 4, 8):
            return f"{bo}i{size}"
        if kind in ("uint", "ptr", "bool") and size in (1, 2, 4, 8):
            return f"{bo}u{size}"
        if kind == "float" and size in (2, 4, 8):
            return f"{bo}f{size}"
        return f"V{size}"

    # -- records ------------------------------------------------------------------

    def record_class(self) -> Type[Record]:
        """A tuple subclass with one attribute per field (see :class:`Record`)."""
        if self._record_class is None:
            self._record_class = _make_record_class(self.name, self.field_names)
        return self._record_class

    def decoder(self) -> Callable[..., Any]:
        """``decode(buffer, offset=0) -> record`` for one struct in ``buffer``.

        Built once per layout: one precompiled ``struct.Struct.unpack_from``
        call, then only char arrays (and arrays/int128) are post-processed.
        Char arrays go through a small per-field memo (raw bytes -> str, at
        most 4096 entries, cleared when full) since the same values (task
        names) recur across events.  Raises ``struct.error`` if the buffer is
        too short, like ``unpack_from``.
        """
        if self._decoder is None:
            self._decoder = self._build_decoder()
        return self._decoder

    def decode(self, buffer: Any, offset: int = 0) -> Any:
        """Decode one record (convenience; use :meth:`decoder` in loops)."""
        return self.decoder()(buffer, offset)

    def _build_decoder(self) -> Callable[..., Any]:
        cls = self.record_class()
        unpack = self.struct.unpack_from
        ns: Dict[str, Any] = {"_unpack": unpack, "_cls": cls, "_cstr": _decode_cstr,
                              "_ifb": int.from_bytes, "_MAX": _STR_CACHE_MAX}
        nvalues = 0
        plain = True
        for f in self.fields:
            if f.kind in _SCALAR_KINDS and _scalar_code(f.kind, f.size) is not None:
                nvalues += 1
            elif f.kind == "bytes":
                nvalues += 1
            elif f.kind == "array":
                nvalues += f.count
                plain = False
            else:
                nvalues += 1
                plain = False
        if plain:
            src = "def decode(buffer, offset=0):\n    return _cls(_unpack(buffer, offset))\n"
            exec(compile(src, f"<btf decoder {self.name}>", "exec"), ns)
            fn: Callable[..., Any] = ns["decode"]
            return fn

        use_locals = nvalues <= 255
        body: List[str] = []
        if use_locals:
            names = [f"a{i}" for i in range(nvalues)]
            body.append(f"    {', '.join(names)}{',' if nvalues == 1 else ''} = _unpack(buffer, offset)")

            def val(i: int) -> str:
                return names[i]

            def span(i: int, n: int) -> str:
                return "(" + "".join(f"{names[j]}, " for j in range(i, i + n)) + ")"
        else:
            body.append("    v = _unpack(buffer, offset)")

            def val(i: int) -> str:
                return f"v[{i}]"

            def span(i: int, n: int) -> str:
                return f"v[{i}:{i + n}]"

        items: List[str] = []
        vi = 0
        for k, f in enumerate(self.fields):
            if f.kind == "array":
                items.append(span(vi, f.count))
                vi += f.count
                continue
            if f.kind == "char_array":
                cache = f"_c{k}"
                ns[cache] = {}
                ns[f"_g{k}"] = ns[cache].get
                s = f"s{k}"
                body.append(f"    {s} = _g{k}({val(vi)})")
                body.append(f"    if {s} is None:")
                body.append("        try:")
                body.append(f"            {s} = {val(vi)}.partition(b'\\x00')[0].decode()")
                body.append("        except UnicodeDecodeError:")
                body.append(f"            {s} = _cstr({val(vi)})")
                body.append(f"        if len({cache}) >= _MAX:")
                body.append(f"            {cache}.clear()")
                body.append(f"        {cache}[{val(vi)}] = {s}")
                items.append(s)
            elif f.kind in ("int", "uint") and _scalar_code(f.kind, f.size) is None:
                signed = f.kind == "int"
                order = "little" if self.byteorder == "<" else "big"
                items.append(f"_ifb({val(vi)}, {order!r}, signed={signed})")
            else:
                items.append(val(vi))
            vi += 1
        body.append(f"    return _cls(({', '.join(items)}{',' if len(items) == 1 else ''}))")
        src = "def decode(buffer, offset=0):\n" + "\n".join(body) + "\n"
        exec(compile(src, f"<btf decoder {self.name}>", "exec"), ns)
        fn = ns["decode"]
        return fn


# --------------------------------------------------------------------------- Btf

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
        self._starts, self._kinds = self._scan(words, name)
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

    @staticmethod
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
            raise BtfDecodeError(label, f"type id {len(starts) + 1}: truncated type record"
                                 ) from None
        if i != n:
            raise BtfDecodeError(label, f"type id {len(starts)}: record runs past the end of "
                                 "the type section")
        return starts, kinds

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

    # -- names ------------------------------------------------------------------------

    @staticmethod
    def _norm_kind(kind: Optional[KindLike]) -> Optional[Kind]:
        if kind is None:
            return None
        if isinstance(kind, str):
            k = _KIND_ALIASES.get(kind.lower())
            if k is None:
                raise BadArgumentError(f"unknown BTF kind {kind!r}; one of "
                                       f"{', '.join(sorted(_KIND_ALIASES))}")
            return k
        try:
            return Kind(kind)
        except ValueError:
            raise BadArgumentError(f"unknown BTF kind {kind!r}") from None

    def _ids_with_name_off(self, off: int) -> List[int]:
        """Own type ids whose name_off is ``off`` (a 4-byte search over packed offsets)."""
        packed = self._packed_name_offs
        if packed is None:
            packed = self._packed_name_offs = array.array(
                _U32, map(self._w.__getitem__, self._starts)).tobytes()
        pat = array.array(_U32, [off]).tobytes()
        out = []
        pos = packed.find(pat)
        while pos >= 0:
            if pos % 4 == 0:
                out.append(self.start_id + pos // 4)
                pos = packed.find(pat, pos + 4)
            else:
                pos = packed.find(pat, pos + 1)
        return out

    def _build_name_dict(self) -> Dict[str, List[int]]:
        """name -> own type ids (decodes every name; used once look-ups get frequent)."""
        out: Dict[str, List[int]] = {}
        w = self._w
        str_ = self._str
        tid = self.start_id
        for s in self._starts:
            nm = str_(w[s])
            lst = out.get(nm)
            if lst is None:
                out[nm] = [tid]
            else:
                lst.append(tid)
            tid += 1
        return out

    def _str_offsets(self, pattern: bytes) -> List[int]:
        """Every string offset (in the shared offset space) whose string is ``pattern[:-1]``."""
        out = self.base._str_offsets(pattern) if self.base is not None else []
        strs = self._strs
        base = self.start_str_off
        pos = strs.find(pattern)
        while pos >= 0:
            out.append(base + pos)
            pos = strs.find(pattern, pos + len(pattern))
        return out

    def _find_ids(self, name: str, kind: Optional[Kind], include_base: bool = True) -> List[int]:
        ids = (self.base._find_ids(name, kind)
               if include_base and self.base is not None else [])
        raw = name.encode("utf-8", "surrogateescape")
        if b"\0" in raw:
            return ids
        self._lookups += 1
        if self._by_name is None and self._lookups > _FULL_INDEX_AFTER:
            self._by_name = self._build_name_dict()
        if self._by_name is not None:
            own = list(self._by_name.get(name, ()))
        elif not raw:
            own = [t for t in range(self.start_id, self.end_id) if self.name_of(t) == ""]
        else:
            own = []
            for off in self._str_offsets(raw + b"\0"):
                own.extend(self._ids_with_name_off(off))
            own.sort()
        if kind is not None:
            kinds = self._kinds
            st = self.start_id
            own = [t for t in own if kinds[t - st] == kind]
        ids.extend(own)
        return ids

    def find_all(self, name: Optional[str] = None, kind: Optional[KindLike] = None, *,
                 include_base: bool = True) -> List[BtfType]:
        """All types named ``name`` (any name if None) of ``kind`` (any if None), in id order."""
        k = self._norm_kind(kind)
        if name is None:
            return [self.type(t) for t in self._ids_of_kind(k, include_base)]
        return [self.type(t) for t in self._find_ids(name, k, include_base)]

    def _ids_of_kind(self, k: Optional[Kind], include_base: bool) -> List[int]:
        ids = (self.base._ids_of_kind(k, True)
               if include_base and self.base is not None else [])
        own = range(self.start_id, self.end_id)
        if k is None:
            ids.extend(own)
        else:
            ids.extend(compress(own, map(int(k).__eq__, self._kinds)))
        return ids

    def find(self, name: str, kind: Optional[KindLike] = None) -> Optional[BtfType]:
        """The first type named ``name`` (of ``kind``: "struct", "func", Kind.INT, ...), or None."""
        ids = self._find_ids(name, self._norm_kind(kind))
        return self.type(ids[0]) if ids else None

    def has(self, name: str, kind: Optional[KindLike] = None) -> bool:
        return bool(self._find_ids(name, self._norm_kind(kind)))

    def get(self, name: str, kind: Optional[KindLike] = None) -> BtfType:
        """Like :meth:`find` but raises :class:`BtfNotFoundError` with suggestions."""
        t = self.find(name, kind)
        if t is None:
            k = self._norm_kind(kind)
            raise BtfNotFoundError(name, k.label if k is not None else None,
                                   self.suggest(name, k) if k is not None else [])
        return t

    def names(self, kind: KindLike, *, include_base: bool = False) -> List[str]:
        """Sorted, distinct, non-empty names of all types of ``kind``."""
        k = self._norm_kind(kind)
        assert k is not None
        include_base = include_base and self.base is not None
        key = (int(k), include_base)
        cached = self._sorted_names.get(key)
        if cached is None:
            cached = self._sorted_names[key] = sorted(self._name_list(k, include_base))
        return cached

    def _name_list(self, k: Kind, include_base: bool) -> List[str]:
        """Distinct non-empty names of kind ``k``, unsorted (cached)."""
        include_base = include_base and self.base is not None
        key = (int(k), include_base)
        cached = self._names_by_kind.get(key)
        if cached is None:
            w = self._w
            kk = int(k)
            offs = list(map(w.__getitem__,
                            compress(self._starts, map(kk.__eq__, self._kinds))))
            strings = self._all_strings()
            found: Set[Optional[str]] = set(map(strings.get, offs))
            if None in found:   # offsets into the base's strings or mid-string (legal)
                found.update(self._str(o) for o in offs if o not in strings)
            if include_base and self.base is not None:
                found.update(self.base._name_list(k, True))
            cached = [x for x in found if x]
            self._names_by_kind[key] = cached
        return cached

    def functions(self, glob: str = "*", *, include_base: bool = False) -> List[str]:
        """Names of FUNC types matching the shell-style ``glob`` (case-sensitive), sorted.

        For split (module) BTF only the module's own functions are listed unless
        ``include_base``.
        """
        if glob == "*":
            return list(self.names(Kind.FUNC, include_base=include_base))
        if not any(c in glob for c in "*?["):
            return [glob] if self._find_ids(glob, Kind.FUNC, include_base) else []
        match = re.compile(fnmatch.translate(glob)).match
        return sorted(filter(match, self._name_list(Kind.FUNC, include_base)))

    def suggest(self, name: str, kind: Optional[KindLike] = "func", n: int = 5,
                cutoff: float = 0.6) -> List[str]:
        """Up to ``n`` names of ``kind`` close to ``name`` (difflib ratio >= cutoff)."""
        k = self._norm_kind(kind)
        if k is None:
            k = Kind.FUNC
        names = self._name_list(k, True)
        key = (int(k), self.base is not None)
        by_len = self._names_by_len.get(key)
        if by_len is None:
            by_len = self._names_by_len[key] = _group_by_len(names)
        return _close_matches(name, names, n, cutoff, by_len)

    # -- type graph -----------------------------------------------------------------

    def resolve(self, t: Union[int, BtfType]) -> BtfType:
        """Skip TYPEDEF, CONST, VOLATILE, RESTRICT and TYPE_TAG."""
        t = self.type(t)
        for _ in range(_MAX_DEPTH):
            if t.kind not in _MODIFIERS:
                return t
            t = self.type(t.type_id)
        raise self._damaged(f"type chain from id {t.id} too deep or cyclic")

    def strip_qualifiers(self, t: Union[int, BtfType]) -> BtfType:
        """Skip CONST, VOLATILE, RESTRICT and TYPE_TAG (but not TYPEDEF)."""
        t = self.type(t)
        for _ in range(_MAX_DEPTH):
            if t.kind not in _MODIFIERS or t.kind == Kind.TYPEDEF:
                return t
            t = self.type(t.type_id)
        raise self._damaged(f"type chain from id {t.id} too deep or cyclic")

    def size_of(self, t: Union[int, BtfType]) -> int:
        """Size in bytes of a type (pointers are :attr:`ptr_size`)."""
        return self._size_of(self.type(t), 0)

    def _size_of(self, t: BtfType, depth: int) -> int:
        if depth > _MAX_DEPTH:
            raise self._damaged(f"type graph at id {t.id} too deep or cyclic")
        t = self.resolve(t)
        if t.kind in _SIZED:
            return t.size
        if t.kind == Kind.PTR:
            return self.ptr_size
        if t.kind == Kind.ARRAY:
            assert t.array is not None
            return t.array.nelems * self._size_of(self.type(t.array.type_id), depth + 1)
        if t.kind == Kind.VAR:
            return self._size_of(self.type(t.type_id), depth + 1)
        raise BtfError(f"type id {t.id} ({t.kind.label} {t.name!r}) has no size")

    # -- C-ish type strings -------------------------------------------------------------

    def type_str(self, t: Union[int, BtfType], name: str = "") -> str:
        """A C declaration of type ``t`` (with declarator ``name`` if given).

        Typedef names are kept ("u64"), type tags (``__user`` etc.) are dropped,
        anonymous aggregates print as ``struct {...}``.  Examples: ``"int"``,
        ``"struct file *"``, ``"const char *"``, ``"void (*)(int)"``, ``"char [16]"``.
        """
        t = self.type(t)
        if not name:
            cached = self._type_str_cache.get(t.id)
            if cached is not None:
                return cached
        s = self._decl(t, name, 0)
        if not name:
            self._type_str_cache[t.id] = s
        return s

    def _base_name(self, t: BtfType) -> str:
        k = t.kind
        if k in (Kind.STRUCT, Kind.UNION):
            kw = "struct" if k == Kind.STRUCT else "union"
            return f"{kw} {t.name}" if t.name else f"{kw} {{...}}"
        if k in (Kind.ENUM, Kind.ENUM64):
            return f"enum {t.name}" if t.name else "enum {...}"
        if k == Kind.FWD:
            return f"{'union' if t.kind_flag else 'struct'} {t.name}"
        if k == Kind.VOID:
            return "void"
        if k == Kind.DATASEC:
            return f"SEC({t.name!r})"
        return t.name or f"<anon {k.label}>"

    def _decl(self, t: BtfType, inner: str, depth: int, names: bool = False) -> str:
        if depth > _MAX_DEPTH:
            raise self._damaged(f"type graph at id {t.id} too deep or cyclic")
        k = t.kind
        if k == Kind.PTR:
            return self._decl(self.type(t.type_id), "*" + inner, depth + 1)
        if k in _QUALIFIERS:
            target = self.strip_qualifiers(t.type_id)
            q = _QUALIFIERS[Kind(k)]
            if target.kind == Kind.PTR:
                return self._decl(self.type(t.type_id), f"{q} {inner}" if inner else q, depth + 1)
            if target.kind in (Kind.ARRAY, Kind.FUNC_PROTO):
                return self._decl(self.type(t.type_id), inner, depth + 1)
            return f"{q} " + self._decl(self.type(t.type_id), inner, depth + 1)
        if k in (Kind.TYPE_TAG, Kind.VAR, Kind.DECL_TAG):
            if k == Kind.VAR and not inner:
                inner = t.name
            return self._decl(self.type(t.type_id), inner, depth + 1)
        if k == Kind.ARRAY:
            assert t.array is not None
            if inner.startswith("*"):
                inner = f"({inner})"
            return self._decl(self.type(t.array.type_id), f"{inner}[{t.array.nelems}]", depth + 1)
        if k in (Kind.FUNC_PROTO, Kind.FUNC):
            proto = t
            if k == Kind.FUNC:
                proto = self.type(t.type_id)
                if proto.kind != Kind.FUNC_PROTO:
                    raise self._damaged(f"FUNC {t.name!r} (id {t.id}) does not point to a "
                                        "FUNC_PROTO")
                if not inner:
                    inner = t.name
            elif inner.startswith("*"):
                inner = f"({inner})"
            args = self._param_list(proto, depth, with_names=(k == Kind.FUNC and names))
            return self._decl(self.type(proto.type_id), f"{inner}({args})", depth + 1)
        base = self._base_name(t)
        return f"{base} {inner}" if inner else base

    def _param_list(self, proto: BtfType, depth: int, with_names: bool = False) -> str:
        parts = []
        for p in proto.params:
            if p.type_id == 0 and not p.name:
                parts.append("...")
            else:
                parts.append(self._decl(self.type(p.type_id), p.name if with_names else "",
                                        depth + 1))
        return ", ".join(parts) if parts else "void"

    # -- functions -------------------------------------------------------------------------

    def func(self, name: str) -> BtfType:
        """The FUNC named ``name``; :class:`BtfNotFoundError` (with suggestions) if none."""
        return self.get(name, Kind.FUNC)

    def func_proto(self, name: str) -> FuncProto:
        """Parameter names/types and return type of function ``name``."""
        f = self.func(name)
        proto = self.type(f.type_id)
        if proto.kind != Kind.FUNC_PROTO:
            raise self._damaged(f"FUNC {name!r} (id {f.id}) does not point to a FUNC_PROTO")
        params = []
        ids = []
        varargs = False
        for p in proto.params:
            if p.type_id == 0 and not p.name:
                varargs = True
                continue
            params.append((p.name, self.type_str(p.type_id)))
            ids.append(p.type_id)
        return FuncProto(name=name, params=params, ret=self.type_str(proto.type_id),
                         varargs=varargs, linkage=f.linkage_name, param_type_ids=tuple(ids),
                         ret_type_id=proto.type_id, decl=self._decl(f, "", 0, names=True))

    # -- layouts ----------------------------------------------------------------------------

    def struct_layout(self, name: Union[str, int, BtfType]) -> StructLayout:
        """The flattened layout of struct ``name`` (a name, type id or BtfType).

        A name is looked up as a STRUCT first, then as a TYPEDEF of a struct.
        """
        if isinstance(name, str):
            t = self.find(name, Kind.STRUCT)
            if t is None:
                td = self.find(name, Kind.TYPEDEF)
                if td is not None and self.resolve(td).kind in (Kind.STRUCT, Kind.UNION):
                    t = self.resolve(td)
            if t is None:
                t = self.find(name, Kind.UNION)
            if t is None:
                raise BtfNotFoundError(name, "struct", self.suggest(name, Kind.STRUCT))
        else:
            t = self.resolve(name)
        if t.kind == Kind.UNION:
            raise BtfUnsupportedError(f"union {t.name or '{...}'}: a union cannot be an event "
                                      f"layout (wrap it in a struct)")
        if t.kind != Kind.STRUCT:
            raise BtfUnsupportedError(f"type id {t.id} is a {t.kind.label}, not a struct")
        fields: List[Field] = []
        self._flatten(t, 0, "", fields, 0, t.name)
        fields.sort(key=lambda f: f.offset)
        return StructLayout(t.name or f"anon_{t.id}", t.size, fields, self.byteorder, t.id)

    def _flatten(self, st: BtfType, base_off: int, prefix: str, out: List[Field], depth: int,
                 top: str) -> None:
        if depth > _MAX_DEPTH // 4:
            raise self._damaged(f"struct {top}: nesting too deep or cyclic")
        for m in st.members:
            where = f"struct {top}: member {prefix}{m.name or '<anon>'}"
            if m.bitfield_size or m.bit_offset % 8:
                raise BtfUnsupportedError(f"{where} is a bitfield; bitfields are not supported "
                                          f"in event layouts")
            off = base_off + m.bit_offset // 8
            mt = self.resolve(m.type_id)
            msize = self._size_of(mt, depth) if mt.kind not in (Kind.FWD, Kind.VOID,
                                                                 Kind.FUNC_PROTO, Kind.FUNC) else -1
            if msize < 0:
                raise self._damaged(f"{where} has incomplete type {mt.kind.label} {mt.name!r}")
            if m.bit_offset // 8 + msize > st.size:
                raise self._damaged(f"{where} (offset {m.bit_offset // 8}, size {msize}) runs past "
                                    f"the end of its struct (size {st.size})")
            fname = prefix + m.name if m.name else f"{prefix}_anon_{off}"
            tname = self.type_str(m.type_id)
            k = mt.kind
            if k == Kind.STRUCT:
                if msize == 0:
                    continue
                self._flatten(mt, off, f"{prefix}{m.name}." if m.name else prefix, out,
                              depth + 1, top)
                continue
            if k == Kind.UNION:
                if msize:
                    out.append(Field(fname, off, msize, "bytes", msize, type_name=tname))
                continue
            if k == Kind.ARRAY:
                f = self._array_field(mt, fname, off, msize, tname, where, depth)
                if f is not None:
                    out.append(f)
                continue
            skind = self._scalar_kind(mt, where)
            out.append(Field(fname, off, msize, skind, msize if skind == "bytes" else 1,
                             type_name=tname))

    def _scalar_kind(self, t: BtfType, where: str) -> str:
        k = t.kind
        if k == Kind.INT:
            if t.int_offset or t.int_bits != t.size * 8:
                raise BtfUnsupportedError(f"{where} is a bitfield ({t.int_bits}-bit int); "
                                          f"bitfields are not supported in event layouts")
            if t.size not in (1, 2, 4, 8, 16):
                raise self._damaged(f"{where}: int of bad size {t.size}")
            if t.is_bool:
                return "bool"
            return "int" if t.int_encoding & INT_SIGNED else "uint"
        if k in (Kind.ENUM, Kind.ENUM64):
            if t.size not in (1, 2, 4, 8):
                raise self._damaged(f"{where}: enum of bad size {t.size}")
            return "int" if t.kind_flag else "uint"
        if k == Kind.PTR:
            return "ptr"
        if k == Kind.FLOAT:
            return "float" if t.size in (2, 4, 8) else "bytes"
        raise self._damaged(f"{where}: a {k.label} cannot be a struct member")

    def _array_field(self, at: BtfType, fname: str, off: int, size: int, tname: str,
                     where: str, depth: int) -> Optional[Field]:
        shape: List[int] = []
        t = at
        for _ in range(_MAX_DEPTH):
            if t.kind != Kind.ARRAY:
                break
            assert t.array is not None
            shape.append(t.array.nelems)
            t = self.resolve(t.array.type_id)
        else:
            raise self._damaged(f"{where}: array nesting too deep or cyclic")
        count = 1
        for d in shape:
            count *= d
        if count == 0 or size == 0:
            return None  # flexible / zero-length array: not part of the fixed layout
        elem = t
        if elem.kind == Kind.INT and elem.size == 1 and not elem.is_bool and elem.int_bits == 8 \
                and not elem.int_offset:
            if len(shape) == 1 and elem.is_char:
                return Field(fname, off, size, "char_array", count, "char", 1, tuple(shape), tname)
            return Field(fname, off, size, "bytes", size, "uint", 1, tuple(shape), tname)
        if elem.kind in (Kind.INT, Kind.ENUM, Kind.ENUM64, Kind.PTR, Kind.FLOAT):
            ek = self._scalar_kind(elem, where)
            esize = self._size_of(elem, depth)
            if ek in _SCALAR_KINDS and _scalar_code(ek, esize) is not None:
                return Field(fname, off, size, "array", count, ek, esize, tuple(shape), tname)
        return Field(fname, off, size, "bytes", size, shape=tuple(shape), type_name=tname)

    # -- validation ---------------------------------------------------------------------------

    def validate(self) -> None:
        """Check every type of this blob deeply; raise
        :class:`~pytracers.errors.BtfDecodeError` on the first problem.

        Parsing only checks the framing (header, record lengths, kinds); this
        decodes every type (which checks its string offsets and the type ids it
        refers to), checks that FUNCs point at FUNC_PROTOs and that modifier
        chains end.
        """
        for tid in range(self.start_id, self.end_id):
            t = self.type(tid)
            if t.kind == Kind.FUNC and self.kind_of(t.type_id) != Kind.FUNC_PROTO:
                raise self._damaged(f"FUNC {t.name!r} (id {tid}) does not point to a FUNC_PROTO")
            if t.kind in _MODIFIERS:
                self.resolve(t)


_SUGGEST_POOL = 400
_SUGGEST_BUDGET = 3000


def _close_matches(word: str, names: Sequence[str], n: int, cutoff: float,
                   by_len: Optional[Dict[int, List[str]]] = None,
                   pool: int = _SUGGEST_POOL, budget: int = _SUGGEST_BUDGET) -> List[str]:
    """``difflib.get_close_matches(word, names, n, cutoff)``, made fast for ~70k names.

    difflib's score is ``ratio = 2*M/(la+lb)``, ``M`` the matched characters.
    Two exact bounds prune names that cannot reach the current bar:
    ``M <= min(la, lb)`` (whole length buckets), and ``M <= lb - u`` where ``u``
    counts characters of the name that never occur in ``word`` (one C-level
    ``str.translate`` per name).  Names are visited in order of growing length
    difference while a running top ``n`` is kept; once it is full its worst
    score becomes the bar, so the search usually ends early.  The result is
    then exactly difflib's.

    If more than ``budget`` names needed a difflib score (only a few good
    matches exist, so the bar stays low), the remaining candidates are cut to
    the ``pool`` that share the most character bigrams with ``word`` (C-level
    set operations) before scoring: the one approximate step.
    """
    if n <= 0 or not names:
        return []
    if not 0.0 <= cutoff <= 1.0:
        raise BadArgumentError(f"cutoff must be in [0.0, 1.0]: {cutoff!r}")
    if by_len is None:
        by_len = _group_by_len(names)
    la = len(word)
    drop: Dict[int, None] = {ord(c): None for c in set(word)}
    sm = difflib.SequenceMatcher()
    sm.set_seq2(word)
    best: List[Tuple[float, str]] = []   # min-heap of (score, name), like nlargest's order
    bar = cutoff

    def len_bound(L: int) -> float:
        return 2.0 * min(la, L) / (la + L) if la + L else 1.0

    def candidates(bucket: List[str], L: int) -> Iterator[str]:
        limit = L - bar * (la + L) / 2.0   # most unmatchable chars a name may have
        for x, rest in zip(bucket, map(len, map(str.translate, bucket, repeat(drop)))):
            if rest <= limit:
                yield x

    def score(x: str) -> None:
        nonlocal bar
        sm.set_seq1(x)
        if sm.quick_ratio() < bar:
            return
        r = sm.ratio()
        if r < bar:
            return
        item = (r, x)
        if len(best) < n:
            heapq.heappush(best, item)
        elif item > best[0]:
            heapq.heapreplace(best, item)
        else:
            return
        if len(best) == n:
            bar = max(cutoff, best[0][0])

    spent = 0
    maxlen = max(by_len) if by_len else 0
    exhausted = True
    done_lens: set[int] = set()
    for d in range(0, max(la, maxlen) + 1):
        lens = [L for L in ((la,) if d == 0 else (la - d, la + d)) if L >= 0]
        if max(len_bound(L) for L in lens) < bar:
            break
        for L in lens:
            bucket = by_len.get(L)
            if not bucket or len_bound(L) < bar:
                done_lens.add(L)
                continue
            todo = list(candidates(bucket, L))
            if spent + len(todo) > budget:
                exhausted = False
                break
            spent += len(todo)
            for x in todo:
                score(x)
            done_lens.add(L)
        if not exhausted:
            break
    if not exhausted:
        rest: List[str] = []
        for L, bucket in by_len.items():
            if L not in done_lens and len_bound(L) >= bar:
                rest.extend(candidates(bucket, L))
        if len(rest) > pool:
            wb = set(map(operator.add, word, word[1:]))
            tail = operator.itemgetter(slice(1, None))
            shared = map(len, map(wb.intersection, map(map, repeat(operator.add), rest,
                                                       map(tail, rest))))
            rest = [x for _, x in heapq.nlargest(pool, zip(shared, rest))]
        rest.sort(key=lambda x: abs(len(x) - la))
        for x in rest:
            if len_bound(len(x)) < bar:
                break
            score(x)
    return [x for _, x in sorted(best, reverse=True)]


def _group_by_len(names: Sequence[str]) -> Dict[int, List[str]]:
    out: Dict[int, List[str]] = {}
    for x in names:
        lst = out.get(len(x))
        if lst is None:
            out[len(x)] = [x]
        else:
            lst.append(x)
    return out
