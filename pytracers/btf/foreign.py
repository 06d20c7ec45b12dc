"""Event layouts from outside the object's BTF: C text, numpy dtypes, ctypes.

clang writes a struct into an object's ``.BTF`` only when a global variable or
a map declaration uses it.  Tools that reserve ring records through a local
pointer (``struct event *e = bpf_ringbuf_reserve(&rb, sizeof(*e), 0)``) leave
their event struct out, so it cannot be looked up by name.  :func:`event_layout`
accepts, besides a BTF struct name, the layout itself:

- C declarations or a header's text (``"struct event { __u32 pid; ... };"``),
  parsed by cffi (``__u8``..``__u64``, ``__s8``..``__s64``, ``u8``..``u64``
  and ``pid_t`` are predeclared; ``#define NAME number`` works, other
  preprocessor lines are ignored; ``__attribute__((packed))`` anywhere packs
  every struct of the text, other attributes are ignored); with several
  structs the last one is the event unless ``name`` says which;
- a numpy structured dtype (field offsets and ``itemsize`` as given);
- a ``ctypes.Structure`` subclass;
- a :class:`~pytracers.btf.StructLayout`.

Each becomes the same :class:`StructLayout` the BTF path builds (same
records, decoder and numpy dtype).  A struct ending in a flexible array member
(``__u8 data[]`` in C, ``tail="data"`` for dtypes and ctypes) is
variable-length: records carry the member's bytes as their last field and
``rec._length``.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

from ..errors import BadTypeError, BtfNotFoundError, BtfUnsupportedError
from .layout import Field, StructLayout, _SCALAR_KINDS, _scalar_code

if TYPE_CHECKING:  # pragma: no cover
    from .reader import Btf

__all__ = ["event_layout", "layout_from_c", "layout_from_dtype", "layout_from_ctypes",
           "MISSING_STRUCT_HINT"]

MISSING_STRUCT_HINT = (
    "clang writes a struct into the object's BTF only when a global variable or a map "
    "declaration uses it; an event reserved through a local pointer (bpf_ringbuf_reserve) "
    "is left out. Pass the layout instead: event=\"struct {name} {{ ... }};\" (the C "
    "declaration or the header's text), a numpy dtype or a ctypes.Structure -- or keep it "
    "in BTF from C with a global such as `struct {name} *unused_{name} __attribute__((unused));`")

_PRELUDE = """
typedef unsigned char __u8; typedef unsigned short __u16; typedef unsigned int __u32;
typedef unsigned long long __u64; typedef signed char __s8; typedef short __s16;
typedef int __s32; typedef long long __s64;
typedef __u8 u8; typedef __u16 u16; typedef __u32 u32; typedef __u64 u64;
typedef __s8 s8; typedef __s16 s16; typedef __s32 s32; typedef __s64 s64;
typedef int pid_t;
"""


def event_layout(btf: Optional["Btf"], event: Any, name: Optional[str] = None) -> StructLayout:
    """The layout ``event`` stands for (see the module docstring): a BTF struct
    name is looked up in ``btf``; when it is not there the error says why
    clang left it out and what to pass instead."""
    if isinstance(event, StructLayout):
        return event
    if isinstance(event, str):
        if re.fullmatch(r"\s*(struct\s+)?\w+\s*", event):
            sname = event.split()[-1]
            if btf is None:
                raise BtfNotFoundError(sname, "struct", where="(no BTF given)")
            try:
                return btf.struct_layout(sname)
            except BtfNotFoundError as e:
                e.message += ". " + MISSING_STRUCT_HINT.format(name=sname)
                e.args = (e.message,)
                raise
        return layout_from_c(event, name)
    import ctypes
    if isinstance(event, type) and issubclass(event, ctypes.Structure):
        return layout_from_ctypes(event)
    import numpy as np
    if isinstance(event, np.dtype):
        return layout_from_dtype(event, name)
    raise BadTypeError(f"event must be a struct name, C declarations, a numpy dtype, a "
                       f"ctypes.Structure or a StructLayout, not {type(event).__name__}")


# ---------------------------------------------------------------------------- C text

def _clean_c(text: str) -> str:
    lines = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#"):
            m = re.fullmatch(r"#\s*define\s+(\w+)\s+(\(?-?(0x[0-9a-fA-F]+|\d+)[uUlL]*\)?)", s)
            if m:
                lines.append(f"#define {m.group(1)} {m.group(3)}")
            continue
        lines.append(line)
    out = "\n".join(lines)
    out = re.sub(r"__attribute__\s*\(\((?:[^()]|\([^()]*\))*\)\)", "", out)
    out = re.sub(r"\b(volatile|__always_inline|static inline)\b", "", out)
    return out


def layout_from_c(text: str, name: Optional[str] = None) -> StructLayout:
    """The layout of struct ``name`` (default: the last struct declared) in
    the C text ``text``, laid out as on x86-64 (and BPF)."""
    import cffi
    if not isinstance(text, str):
        raise BadTypeError("C declarations must be a str")
    ffi = cffi.FFI()
    src = _clean_c(text)
    packed = bool(re.search(r"__attribute__\s*\(\(\s*(__)?packed", text))
    try:
        ffi.cdef(_PRELUDE)
        ffi.cdef(src, packed=packed)
    except Exception as e:   # cffi.CDefError, pycparser's ParseError
        raise BtfUnsupportedError(f"cannot parse the C declarations: {e}") from None
    declared = re.findall(r"\bstruct\s+(\w+)\s*\{", src)
    if name is None:
        if not declared:
            raise BtfNotFoundError("(any)", "struct", where="the C declarations")
        name = declared[-1]
    name = name.split()[-1]
    if name not in declared:
        import difflib
        raise BtfNotFoundError(name, "struct", difflib.get_close_matches(name, declared),
                               where="the C declarations")
    ct = ffi.typeof(f"struct {name}")
    fields: List[Field] = []
    tail = _c_fields(ffi, ct, 0, "", fields, name)
    fields.sort(key=lambda f: f.offset)
    return StructLayout(name, ffi.sizeof(ct), fields, "<", 0, tail)


def _c_scalar(ffi: Any, ct: Any, where: str) -> Tuple[str, int]:
    if ct.kind == "pointer":
        return "ptr", ffi.sizeof(ct)
    if ct.kind == "enum":
        return ("int" if int(ffi.cast(ct, -1)) < 0 else "uint"), ffi.sizeof(ct)
    if ct.kind != "primitive":
        raise BtfUnsupportedError(f"{where}: a {ct.kind} cannot be a field")
    size = ffi.sizeof(ct)
    if ct.cname in ("float", "double"):
        return "float", size
    if ct.cname in ("_Bool", "bool"):
        return "bool", size
    if ct.cname == "long double":
        return "bytes", size
    return ("int" if int(ffi.cast(ct, -1)) < 0 else "uint"), size


def _c_fields(ffi: Any, st: Any, base: int, prefix: str, out: List[Field],
              top: str) -> Optional[Field]:
    if st.kind == "union":
        raise BtfUnsupportedError(f"union {top}: a union cannot be an event layout")
    tail = None
    members = st.fields or []
    for i, (fname, cf) in enumerate(members):
        where = f"struct {top}: member {prefix}{fname}"
        if cf.bitsize >= 0:
            raise BtfUnsupportedError(f"{where} is a bitfield; bitfields are not supported "
                                      f"in event layouts")
        off = base + cf.offset
        t = cf.type
        full = prefix + fname
        if t.kind == "array" and t.length is None:
            if i != len(members) - 1 or prefix:
                raise BtfUnsupportedError(f"{where}: a flexible array must end the struct")
            tail = Field(full, off, 0, "bytes", 0, type_name=t.cname)
            continue
        if t.kind == "struct":
            _c_fields(ffi, t, off, full + ".", out, top)
            continue
        size = ffi.sizeof(t)
        if t.kind == "union":
            out.append(Field(full, off, size, "bytes", size, type_name=t.cname))
            continue
        if t.kind == "array":
            shape: List[int] = []
            e = t
            while e.kind == "array":
                shape.append(e.length)
                e = e.item
            count = 1
            for d in shape:
                count *= d
            if count == 0:
                continue
            if e.kind == "primitive" and e.cname == "char" and len(shape) == 1:
                out.append(Field(full, off, size, "char_array", count, "char", 1, tuple(shape),
                                 t.cname))
                continue
            if e.kind in ("primitive", "enum", "pointer"):
                ek, es = _c_scalar(ffi, e, where)
                if es == 1 and ek in ("int", "uint"):
                    out.append(Field(full, off, size, "bytes", size, "uint", 1, tuple(shape),
                                     t.cname))
                    continue
                if ek in _SCALAR_KINDS and _scalar_code(ek, es) is not None:
                    out.append(Field(full, off, size, "array", count, ek, es, tuple(shape),
                                     t.cname))
                    continue
            out.append(Field(full, off, size, "bytes", size, shape=tuple(shape),
                             type_name=t.cname))
            continue
        kind, size = _c_scalar(ffi, t, where)
        out.append(Field(full, off, size, kind, size if kind == "bytes" else 1,
                         type_name=t.cname))
    return tail


# ---------------------------------------------------------------------------- numpy

def layout_from_dtype(dtype: Any, name: Optional[str] = None,
                      tail: Optional[str] = None) -> StructLayout:
    """The layout of a numpy structured dtype (``S<n>`` fields are char arrays,
    ``u1``/``i1`` sub-arrays and ``V<n>`` raw bytes).  ``tail`` names a
    flexible array member starting at ``itemsize`` (variable-length records)."""
    import numpy as np
    dt = np.dtype(dtype)
    if dt.names is None:
        raise BadTypeError("a numpy event layout must be a structured dtype (with fields)")
    fields: List[Field] = []
    _np_fields(dt, 0, "", fields)
    fields.sort(key=lambda f: f.offset)
    bo = ">" if any(f.type_name.startswith(">") for f in fields) else "<"
    t = Field(tail, dt.itemsize, 0, "bytes", 0) if tail else None
    return StructLayout(name or "record", dt.itemsize, fields, bo, 0, t)


def _np_kind(base: Any) -> Tuple[str, int]:
    k = base.kind
    if k == "i":
        return "int", base.itemsize
    if k == "u":
        return "uint", base.itemsize
    if k == "b":
        return "bool", base.itemsize
    if k == "f":
        return "float", base.itemsize
    return "bytes", base.itemsize


def _np_fields(dt: Any, base: int, prefix: str, out: List[Field]) -> None:
    for fname in dt.names:
        ft, off = dt.fields[fname][:2]
        full = prefix + fname
        off += base
        if ft.names is not None:
            _np_fields(ft, off, full + ".", out)
            continue
        if ft.subdtype is not None:
            elem, shape = ft.subdtype
            count = 1
            for d in shape:
                count *= d
            ek, es = _np_kind(elem)
            if es == 1 and ek in ("int", "uint"):
                out.append(Field(full, off, ft.itemsize, "bytes", ft.itemsize, "uint", 1,
                                 tuple(shape), elem.str))
            elif ek != "bytes" and _scalar_code(ek, es) is not None:
                out.append(Field(full, off, ft.itemsize, "array", count, ek, es, tuple(shape),
                                 elem.str))
            else:
                out.append(Field(full, off, ft.itemsize, "bytes", ft.itemsize,
                                 shape=tuple(shape), type_name=elem.str))
            continue
        if ft.kind == "S":
            out.append(Field(full, off, ft.itemsize, "char_array", ft.itemsize, "char", 1,
                             (ft.itemsize,), ft.str))
            continue
        k, size = _np_kind(ft)
        if k != "bytes" and _scalar_code(k, size) is None:
            k = "bytes"
        out.append(Field(full, off, size, k, size if k == "bytes" else 1, type_name=ft.str))


# ---------------------------------------------------------------------------- ctypes

_CT_CODES = {"b": "int", "h": "int", "i": "int", "l": "int", "q": "int",
             "B": "uint", "H": "uint", "I": "uint", "L": "uint", "Q": "uint",
             "?": "bool", "f": "float", "d": "float", "P": "ptr", "z": "ptr", "Z": "ptr",
             "O": "ptr"}


def layout_from_ctypes(cls: Any, tail: Optional[str] = None) -> StructLayout:
    """The layout of a ``ctypes.Structure`` subclass; a zero-length array as
    the last field (or ``tail``) is a flexible array member."""
    import ctypes
    fields: List[Field] = []
    t = _ct_fields(cls, 0, "", fields, cls.__name__, tail)
    fields.sort(key=lambda f: f.offset)
    return StructLayout(cls.__name__, ctypes.sizeof(cls), fields, "<", 0, t)


def _ct_scalar(t: Any, where: str) -> Tuple[str, int]:
    import ctypes
    code = getattr(t, "_type_", None)
    if isinstance(code, str) and code in _CT_CODES:
        return _CT_CODES[code], ctypes.sizeof(t)
    if isinstance(code, str) and code == "c":
        return "int", 1
    if issubclass(t, ctypes._Pointer):
        return "ptr", ctypes.sizeof(t)
    raise BtfUnsupportedError(f"{where}: ctypes type {t.__name__} cannot be a field")


def _ct_fields(cls: Any, base: int, prefix: str, out: List[Field], top: str,
               tail: Optional[str]) -> Optional[Field]:
    import ctypes
    found = None
    members = list(getattr(cls, "_fields_", ()))
    for i, spec in enumerate(members):
        fname, t = spec[0], spec[1]
        where = f"struct {top}: member {prefix}{fname}"
        if len(spec) > 2:
            raise BtfUnsupportedError(f"{where} is a bitfield; bitfields are not supported "
                                      f"in event layouts")
        off = base + getattr(cls, fname).offset
        full = prefix + fname
        size = ctypes.sizeof(t)
        if issubclass(t, ctypes.Array) and size == 0 and not prefix and \
                (i == len(members) - 1 or fname == tail):
            found = Field(full, off, 0, "bytes", 0, type_name=t.__name__)
            continue
        if issubclass(t, ctypes.Structure):
            _ct_fields(t, off, full + ".", out, top, None)
            continue
        if issubclass(t, ctypes.Union):
            out.append(Field(full, off, size, "bytes", size, type_name=t.__name__))
            continue
        if issubclass(t, ctypes.Array):
            shape: List[int] = []
            e = t
            while issubclass(e, ctypes.Array):
                shape.append(e._length_)
                e = e._type_
            count = 1
            for d in shape:
                count *= d
            if count == 0:
                continue
            if e is ctypes.c_char and len(shape) == 1:
                out.append(Field(full, off, size, "char_array", count, "char", 1, tuple(shape),
                                 t.__name__))
                continue
            try:
                ek, es = _ct_scalar(e, where)
            except BtfUnsupportedError:
                ek, es = "bytes", 0
            if es == 1 and ek in ("int", "uint"):
                out.append(Field(full, off, size, "bytes", size, "uint", 1, tuple(shape),
                                 t.__name__))
            elif ek != "bytes" and _scalar_code(ek, es) is not None:
                out.append(Field(full, off, size, "array", count, ek, es, tuple(shape),
                                 t.__name__))
            else:
                out.append(Field(full, off, size, "bytes", size, shape=tuple(shape),
                                 type_name=t.__name__))
            continue
        kind, size = _ct_scalar(t, where)
        out.append(Field(full, off, size, kind, 1, type_name=t.__name__))
    if tail and found is None:
        import ctypes as _c
        found = Field(tail, _c.sizeof(cls), 0, "bytes", 0)
    return found
