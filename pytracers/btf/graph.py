"""Following a Btf's type graph: modifiers, sizes, C declarations, prototypes.

These functions are methods of :class:`~pytracers.btf.Btf` (assigned in its
class body in ``reader.py``); ``self`` is the Btf.  Chains longer than
``_MAX_DEPTH`` are taken for cycles in damaged data and raise
:class:`~pytracers.errors.BtfDecodeError`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Union

from ..errors import BtfError
from .types import _MAX_DEPTH, _MODIFIERS, _QUALIFIERS, _SIZED, BtfType, FuncProto, Kind

if TYPE_CHECKING:  # pragma: no cover
    from .reader import Btf


def resolve(self: Btf, t: Union[int, BtfType]) -> BtfType:
    """Skip TYPEDEF, CONST, VOLATILE, RESTRICT and TYPE_TAG."""
    t = self.type(t)
    for _ in range(_MAX_DEPTH):
        if t.kind not in _MODIFIERS:
            return t
        t = self.type(t.type_id)
    raise self._damaged(f"type chain from id {t.id} too deep or cyclic")


def strip_qualifiers(self: Btf, t: Union[int, BtfType]) -> BtfType:
    """Skip CONST, VOLATILE, RESTRICT and TYPE_TAG (but not TYPEDEF)."""
    t = self.type(t)
    for _ in range(_MAX_DEPTH):
        if t.kind not in _MODIFIERS or t.kind == Kind.TYPEDEF:
            return t
        t = self.type(t.type_id)
    raise self._damaged(f"type chain from id {t.id} too deep or cyclic")


def size_of(self: Btf, t: Union[int, BtfType]) -> int:
    """Size in bytes of a type (pointers are :attr:`ptr_size`)."""
    return self._size_of(self.type(t), 0)


def _size_of(self: Btf, t: BtfType, depth: int) -> int:
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


# -- C-ish type strings ------------------------------------------------------------------

def type_str(self: Btf, t: Union[int, BtfType], name: str = "") -> str:
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


def _base_name(self: Btf, t: BtfType) -> str:
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


def _decl(self: Btf, t: BtfType, inner: str, depth: int, names: bool = False) -> str:
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


def _param_list(self: Btf, proto: BtfType, depth: int, with_names: bool = False) -> str:
    parts = []
    for p in proto.params:
        if p.type_id == 0 and not p.name:
            parts.append("...")
        else:
            parts.append(self._decl(self.type(p.type_id), p.name if with_names else "",
                                    depth + 1))
    return ", ".join(parts) if parts else "void"


# -- functions ---------------------------------------------------------------------------

def func(self: Btf, name: str) -> BtfType:
    """The FUNC named ``name``; :class:`BtfNotFoundError` (with suggestions) if none."""
    return self.get(name, Kind.FUNC)


def func_proto(self: Btf, name: str) -> FuncProto:
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


# -- validation --------------------------------------------------------------------------

def validate(self: Btf) -> None:
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
