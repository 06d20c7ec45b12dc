"""BTF kinds and the value classes a parsed blob hands out.

:class:`Kind` names the ``BTF_KIND_*`` numbers; :class:`BtfType` is one decoded
type record, with its :class:`Member`, :class:`EnumValue`, :class:`Param`,
:class:`VarSecinfo` and :class:`ArrayInfo` parts; :class:`FuncProto` is a
function's prototype as C strings.  All are immutable values sharing one
small base (:class:`_Value`).  The kind sets at the end of the kind section
(modifiers, sized kinds, kinds that refer to a type) are used by the reader
and by the type-graph walks.
"""
from __future__ import annotations

import array
import operator
from enum import IntEnum
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from ..errors import BadArgumentError

INT_SIGNED = 1
INT_CHAR = 2
INT_BOOL = 4

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


def _norm_kind(kind: Optional[KindLike]) -> Optional[Kind]:
    """``kind`` (a Kind, its number or a lower-case name or alias) as a Kind; None stays None."""
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


_MODIFIERS = frozenset({Kind.TYPEDEF, Kind.CONST, Kind.VOLATILE, Kind.RESTRICT, Kind.TYPE_TAG})
_QUALIFIERS = {Kind.CONST: "const", Kind.VOLATILE: "volatile", Kind.RESTRICT: "restrict"}
_SIZED = frozenset({Kind.INT, Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64, Kind.FLOAT,
                    Kind.DATASEC})
# kinds whose third word is a type id that must be valid
_REFERS = frozenset({Kind.PTR, Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT,
                     Kind.FUNC, Kind.FUNC_PROTO, Kind.VAR, Kind.DECL_TAG, Kind.TYPE_TAG})

_MAX_DEPTH = 96           # deepest type chain we follow before calling it a cycle


def _u32_typecode() -> str:
    for code in ("I", "L"):
        if array.array(code).itemsize == 4:
            return code
    raise ImportError("no 32-bit array typecode on this platform")  # pragma: no cover


_U32 = _u32_typecode()    # the array typecode of a BTF word

_FUNC_LINKAGE = {0: "static", 1: "global", 2: "extern"}
_VAR_LINKAGE = {0: "static", 1: "global", 2: "extern"}




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


