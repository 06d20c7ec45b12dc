"""Name look-ups on a Btf: by name and kind, all names of a kind, function globs.

These functions are methods of :class:`~pytracers.btf.Btf` (assigned in its
class body in ``reader.py``); ``self`` is the Btf.  How a look-up stays cheap
is told in the package docstring ("Parsing is lazy").
"""
from __future__ import annotations

import array
import fnmatch
import re
from itertools import compress
from typing import TYPE_CHECKING, Dict, List, Optional, Set

from ..errors import BtfNotFoundError
from .types import _U32, BtfType, Kind, KindLike, _norm_kind

if TYPE_CHECKING:  # pragma: no cover
    from .reader import Btf

_FULL_INDEX_AFTER = 64    # name look-ups on one Btf before building a full name dict


def _ids_with_name_off(self: Btf, off: int) -> List[int]:
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


def _build_name_dict(self: Btf) -> Dict[str, List[int]]:
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


def _str_offsets(self: Btf, pattern: bytes) -> List[int]:
    """Every string offset (in the shared offset space) whose string is ``pattern[:-1]``."""
    out = self.base._str_offsets(pattern) if self.base is not None else []
    strs = self._strs
    base = self.start_str_off
    pos = strs.find(pattern)
    while pos >= 0:
        out.append(base + pos)
        pos = strs.find(pattern, pos + len(pattern))
    return out


def _find_ids(self: Btf, name: str, kind: Optional[Kind], include_base: bool = True) -> List[int]:
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


def find_all(self: Btf, name: Optional[str] = None, kind: Optional[KindLike] = None, *,
             include_base: bool = True) -> List[BtfType]:
    """All types named ``name`` (any name if None) of ``kind`` (any if None), in id order."""
    k = _norm_kind(kind)
    if name is None:
        return [self.type(t) for t in self._ids_of_kind(k, include_base)]
    return [self.type(t) for t in self._find_ids(name, k, include_base)]


def _ids_of_kind(self: Btf, k: Optional[Kind], include_base: bool) -> List[int]:
    ids = (self.base._ids_of_kind(k, True)
           if include_base and self.base is not None else [])
    own = range(self.start_id, self.end_id)
    if k is None:
        ids.extend(own)
    else:
        ids.extend(compress(own, map(int(k).__eq__, self._kinds)))
    return ids


def find(self: Btf, name: str, kind: Optional[KindLike] = None) -> Optional[BtfType]:
    """The first type named ``name`` (of ``kind``: "struct", "func", Kind.INT, ...), or None."""
    ids = self._find_ids(name, _norm_kind(kind))
    return self.type(ids[0]) if ids else None


def has(self: Btf, name: str, kind: Optional[KindLike] = None) -> bool:
    return bool(self._find_ids(name, _norm_kind(kind)))


def get(self: Btf, name: str, kind: Optional[KindLike] = None) -> BtfType:
    """Like :meth:`find` but raises :class:`BtfNotFoundError` with suggestions."""
    t = self.find(name, kind)
    if t is None:
        k = _norm_kind(kind)
        raise BtfNotFoundError(name, k.label if k is not None else None,
                               self.suggest(name, k) if k is not None else [])
    return t


def names(self: Btf, kind: KindLike, *, include_base: bool = False) -> List[str]:
    """Sorted, distinct, non-empty names of all types of ``kind``."""
    k = _norm_kind(kind)
    assert k is not None
    include_base = include_base and self.base is not None
    key = (int(k), include_base)
    cached = self._sorted_names.get(key)
    if cached is None:
        cached = self._sorted_names[key] = sorted(self._name_list(k, include_base))
    return cached


def _name_list(self: Btf, k: Kind, include_base: bool) -> List[str]:
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


def functions(self: Btf, glob: str = "*", *, include_base: bool = False) -> List[str]:
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
