"""Event layouts: how a BTF struct becomes fields, and fields become Python values.

:func:`struct_layout` flattens a BTF struct into :class:`Field` values by the rules
in the package docstring ("Event layout rules"); :class:`StructLayout` turns the
fields into a precompiled :class:`struct.Struct`, a numpy structured dtype and a
fast per-event decoder that builds :class:`Record` tuples.
"""
from __future__ import annotations

import keyword
import operator
import struct
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

from ..errors import BtfError, BtfNotFoundError, BtfUnsupportedError
from .types import _MAX_DEPTH, INT_SIGNED, BtfType, Kind, _set, _Value

if TYPE_CHECKING:  # pragma: no cover
    import numpy

    from .reader import Btf

_STR_CACHE_MAX = 4096     # per char-array field, in decoders

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
    ``_asdict()`` maps the real (dotted) field names to values.  A field named
    like a tuple method (``count``, ``index``) reads the field: the methods
    stay reachable as ``tuple.count(rec, x)``.
    """

    __slots__ = ()
    _fields: Tuple[str, ...] = ()
    _size = 0                 # bytes of the fixed struct
    _tail_offset = -1         # offset of a flexible array member (the last field), or -1

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

    @property
    def _length(self) -> int:
        """The record's length in bytes: the struct's size, or for a
        variable-length struct the offset of its flexible array member plus
        the bytes that arrived for it (the last field)."""
        if self._tail_offset >= 0:
            return self._tail_offset + len(self[-1])
        return self._size

    def __reduce__(self) -> Any:
        return (_rebuild_record, (self._layout_key(), tuple(self)))

    @classmethod
    def _layout_key(cls) -> Tuple[Any, ...]:
        return (cls.__name__, cls._fields, cls._size, cls._tail_offset)


def _rebuild_record(key: Tuple[Any, ...], values: Tuple[Any, ...]) -> Any:
    # Records pickle as plain (name, fields, size, tail offset, values); rebuild
    # a compatible class.
    name, fields = key[0], key[1]
    cls = _make_record_class(name, fields, *key[2:4])
    return cls(values)


# Names a field can never take over: what Record itself defines and needs.
_RECORD_OWN = frozenset(n for n in vars(Record) if n.startswith("_")) | frozenset(
    n for n in dir(tuple) if n.startswith("__"))

_RECORD_CLASS_CACHE: Dict[Tuple[Any, ...], Type[Record]] = {}


def _attr_name(field_name: str) -> str:
    return field_name.replace(".", "_")


def _make_record_class(name: str, fields: Tuple[str, ...], size: int = 0,
                       tail_offset: int = -1) -> Type[Record]:
    key = (name, fields, size, tail_offset)
    cls = _RECORD_CLASS_CACHE.get(key)
    if cls is not None:
        return cls
    from operator import itemgetter
    ns: Dict[str, Any] = {"__slots__": (), "_fields": fields, "_size": size,
                          "_tail_offset": tail_offset, "__doc__": f"Record of struct {name}"}
    for i, f in enumerate(fields):
        attr = _attr_name(f)
        # A field named like a tuple method (count, index) reads the field: the
        # property on the subclass shadows the method.  Only the record's own
        # machinery (_fields, _asdict, _make, dunders) is never shadowed.
        if not attr.isidentifier() or keyword.iskeyword(attr) or attr in ns \
                or attr in _RECORD_OWN:
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
                 type_id: int = 0, tail: Optional[Field] = None) -> None:
        self.name = name
        self.size = size
        self.fields: Tuple[Field, ...] = tuple(fields)
        self.byteorder = byteorder
        self.type_id = type_id
        # A flexible array member (``__u8 data[]``) ending a variable-length
        # struct: records get its bytes as their last field (``kind`` "bytes").
        self.tail = tail
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
            names = self.field_names
            if self.tail is not None:
                names += (self.tail.name,)
            self._record_class = _make_record_class(
                self.name, names, self.size, self.tail.offset if self.tail is not None else -1)
        return self._record_class

    def decoder(self) -> Callable[..., Any]:
        """``decode(buffer, offset=0) -> record`` for one struct in ``buffer``
        (variable-length layouts: ``decode(buffer, offset=0, length=None)``).

        Built once per layout: one precompiled ``struct.Struct.unpack_from``
        call, then only char arrays (and arrays/int128) are post-processed.
        Char arrays go through a small per-field memo (raw bytes -> str, at
        most 4096 entries, cleared when full) since the same values (task
        names) recur across events.  Raises ``struct.error`` if the buffer is
        too short, like ``unpack_from``.
        """
        if self._decoder is None:
            self._decoder = self._build_decoder() if self.tail is None else self._var_decoder()
        return self._decoder

    def _var_decoder(self) -> Callable[..., Any]:
        # decode(buffer, offset=0, length=None): the fixed part, then the
        # flexible member's bytes up to ``length`` (the record's length).
        fixed = StructLayout(self.name, self.size, self.fields, self.byteorder).decoder()
        cls = self.record_class()
        toff = self.tail.offset if self.tail is not None else self.size

        def decode(buffer: Any, offset: int = 0, length: Optional[int] = None) -> Any:
            rec = fixed(buffer, offset)
            tail = b"" if length is None else bytes(buffer[offset + toff:offset + length])
            return cls((*rec, tail))
        return decode

    def decode(self, buffer: Any, offset: int = 0, length: Optional[int] = None) -> Any:
        """Decode one record (convenience; use :meth:`decoder` in loops).
        ``length``: the record's length, for a variable-length layout."""
        if length is not None and self.tail is not None:
            return self.decoder()(buffer, offset, length)
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


# --------------------------------------------------------------------------- from BTF

def struct_layout(btf: "Btf", name: Union[str, int, BtfType]) -> StructLayout:
    """:meth:`Btf.struct_layout`: the flattened layout of struct ``name`` in ``btf``.

    Damaged member types raise :class:`~pytracers.errors.BtfDecodeError`.
    """
    if isinstance(name, str):
        t = btf.find(name, Kind.STRUCT)
        if t is None:
            td = btf.find(name, Kind.TYPEDEF)
            if td is not None and btf.resolve(td).kind in (Kind.STRUCT, Kind.UNION):
                t = btf.resolve(td)
        if t is None:
            t = btf.find(name, Kind.UNION)
        if t is None:
            raise BtfNotFoundError(name, "struct", btf.suggest(name, Kind.STRUCT))
    else:
        t = btf.resolve(name)
    if t.kind == Kind.UNION:
        raise BtfUnsupportedError(f"union {t.name or '{...}'}: a union cannot be an event "
                                  f"layout (wrap it in a struct)")
    if t.kind != Kind.STRUCT:
        raise BtfUnsupportedError(f"type id {t.id} is a {t.kind.label}, not a struct")
    fields: List[Field] = []
    _flatten(btf, t, 0, "", fields, 0, t.name)
    fields.sort(key=lambda f: f.offset)
    tail = None
    if t.members:
        last = t.members[-1]
        lt = btf.resolve(last.type_id)
        if lt.kind == Kind.ARRAY and lt.array is not None and lt.array.nelems == 0 and last.name:
            tail = Field(last.name, last.bit_offset // 8, 0, "bytes", 0,
                         type_name=btf.type_str(last.type_id))
    return StructLayout(t.name or f"anon_{t.id}", t.size, fields, btf.byteorder, t.id, tail)


def _flatten(btf: "Btf", st: BtfType, base_off: int, prefix: str, out: List[Field], depth: int,
             top: str) -> None:
    if depth > _MAX_DEPTH // 4:
        raise btf._damaged(f"struct {top}: nesting too deep or cyclic")
    for m in st.members:
        where = f"struct {top}: member {prefix}{m.name or '<anon>'}"
        if m.bitfield_size or m.bit_offset % 8:
            raise BtfUnsupportedError(f"{where} is a bitfield; bitfields are not supported "
                                      f"in event layouts")
        off = base_off + m.bit_offset // 8
        mt = btf.resolve(m.type_id)
        msize = btf._size_of(mt, depth) if mt.kind not in (Kind.FWD, Kind.VOID,
                                                            Kind.FUNC_PROTO, Kind.FUNC) else -1
        if msize < 0:
            raise btf._damaged(f"{where} has incomplete type {mt.kind.label} {mt.name!r}")
        if m.bit_offset // 8 + msize > st.size:
            raise btf._damaged(f"{where} (offset {m.bit_offset // 8}, size {msize}) runs past "
                               f"the end of its struct (size {st.size})")
        fname = prefix + m.name if m.name else f"{prefix}_anon_{off}"
        tname = btf.type_str(m.type_id)
        k = mt.kind
        if k == Kind.STRUCT:
            if msize == 0:
                continue
            _flatten(btf, mt, off, f"{prefix}{m.name}." if m.name else prefix, out,
                     depth + 1, top)
            continue
        if k == Kind.UNION:
            if msize:
                out.append(Field(fname, off, msize, "bytes", msize, type_name=tname))
            continue
        if k == Kind.ARRAY:
            f = _array_field(btf, mt, fname, off, msize, tname, where, depth)
            if f is not None:
                out.append(f)
            continue
        skind = _scalar_kind(btf, mt, where)
        out.append(Field(fname, off, msize, skind, msize if skind == "bytes" else 1,
                         type_name=tname))


def _scalar_kind(btf: "Btf", t: BtfType, where: str) -> str:
    k = t.kind
    if k == Kind.INT:
        if t.int_offset or t.int_bits != t.size * 8:
            raise BtfUnsupportedError(f"{where} is a bitfield ({t.int_bits}-bit int); "
                                      f"bitfields are not supported in event layouts")
        if t.size not in (1, 2, 4, 8, 16):
            raise btf._damaged(f"{where}: int of bad size {t.size}")
        if t.is_bool:
            return "bool"
        return "int" if t.int_encoding & INT_SIGNED else "uint"
    if k in (Kind.ENUM, Kind.ENUM64):
        if t.size not in (1, 2, 4, 8):
            raise btf._damaged(f"{where}: enum of bad size {t.size}")
        return "int" if t.kind_flag else "uint"
    if k == Kind.PTR:
        return "ptr"
    if k == Kind.FLOAT:
        return "float" if t.size in (2, 4, 8) else "bytes"
    raise btf._damaged(f"{where}: a {k.label} cannot be a struct member")


def _array_field(btf: "Btf", at: BtfType, fname: str, off: int, size: int, tname: str,
                 where: str, depth: int) -> Optional[Field]:
    shape: List[int] = []
    t = at
    for _ in range(_MAX_DEPTH):
        if t.kind != Kind.ARRAY:
            break
        assert t.array is not None
        shape.append(t.array.nelems)
        t = btf.resolve(t.array.type_id)
    else:
        raise btf._damaged(f"{where}: array nesting too deep or cyclic")
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
        ek = _scalar_kind(btf, elem, where)
        esize = btf._size_of(elem, depth)
        if ek in _SCALAR_KINDS and _scalar_code(ek, esize) is not None:
            return Field(fname, off, size, "array", count, ek, esize, tuple(shape), tname)
    return Field(fname, off, size, "bytes", size, shape=tuple(shape), type_name=tname)
