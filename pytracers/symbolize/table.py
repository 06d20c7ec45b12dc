"""A sorted address table: a few addresses are looked up one by one
(``bisect``, no numpy), many in bulk (numpy ``searchsorted`` over arrays
made the first time they are needed).

Importing numpy costs ~110 ms of CPU here, about what looking up 100,000
addresses one by one in Python costs (~1 us each): a profile's distinct
addresses (hundreds to a few thousand) are looked up one by one unless numpy
is already loaded.  So the bulk search is used from :data:`BULK` addresses
at once, or from :data:`BULK_LOADED` when numpy is already imported; both
ways give the same results.
"""
from __future__ import annotations

import sys
from bisect import bisect_right
from typing import Any, List, Optional, Sequence, Sized, Tuple

__all__ = ["SymbolTable", "BULK", "BULK_LOADED", "as_ints", "is_bulk"]

#: from this many addresses at once, tables are searched with numpy
BULK = 65536
#: ... and from this many when numpy is already imported
BULK_LOADED = 1024


def as_ints(addrs: Any) -> List[int]:
    """Addresses as a list of Python ints (a numpy array's ``tolist``)."""
    if hasattr(addrs, "tolist"):
        return list(addrs.tolist())
    return [int(a) for a in addrs]


def is_bulk(addrs: Sized) -> bool:
    """Whether to search for these addresses with numpy (see the module's
    docstring)."""
    n = len(addrs)
    return n >= BULK or (n >= BULK_LOADED and "numpy" in sys.modules)


class SymbolTable:
    """Symbols sorted by start address; :meth:`locate` resolves addresses.

    ``sizes`` may be None (kallsyms gives none): a symbol then ends where the
    next one starts.  With sizes, an address past a symbol's end and before
    the next symbol is not that symbol's (a gap: padding, stripped code).
    Symbols with the same start keep the order they were given in, and an
    address resolves to the last of them.
    """

    __slots__ = ("start_list", "end_list", "names", "_arrays")

    def __init__(self, starts: Any, names: Sequence[Any],
                 sizes: Optional[Any] = None, end: Optional[int] = None) -> None:
        s = as_ints(starts)
        order = sorted(range(len(s)), key=s.__getitem__)     # stable
        st = [s[i] for i in order]
        self.names: List[Any] = [names[i] for i in order]
        if not st:
            ends: List[int] = []
        elif sizes is not None:
            z = as_ints(sizes)
            nxt = st[1:] + [end if end is not None else st[-1] + 1]
            # a zero-sized symbol (assembly labels) extends to the next symbol
            ends = [n if z[i] == 0 else a + z[i] for i, a, n in zip(order, st, nxt)]
        else:
            ends = st[1:] + [end if end is not None else st[-1] + 4096]
        self.start_list: List[int] = st
        self.end_list: List[int] = ends
        self._arrays: Optional[Tuple[Any, Any]] = None

    def __len__(self) -> int:
        return len(self.names)

    def _np(self) -> Tuple[Any, Any]:
        if self._arrays is None:
            import numpy as np
            self._arrays = (np.array(self.start_list, dtype=np.uint64),
                            np.array(self.end_list, dtype=np.uint64))
        return self._arrays

    @property
    def starts(self) -> Any:
        """The sorted start addresses (a numpy uint64 array)."""
        return self._np()[0]

    @property
    def ends(self) -> Any:
        """Each symbol's end (a numpy uint64 array)."""
        return self._np()[1]

    def find(self, addrs: Any) -> Tuple[Any, Any]:
        """Bulk: for each address (a uint64 array), the index of its symbol
        (-1 where none covers it) and its offset into that symbol (arrays)."""
        import numpy as np
        starts, ends = self._np()
        a = np.asarray(addrs, dtype=np.uint64)
        idx = np.searchsorted(starts, a, side="right").astype(np.int64) - 1
        ok = idx >= 0
        safe = np.where(ok, idx, 0)
        if len(starts):
            ok &= a < ends[safe]
            off = np.where(ok, a - starts[safe], 0).astype(np.int64)
        else:
            ok[:] = False
            off = np.zeros(len(a), dtype=np.int64)
        return np.where(ok, idx, -1), off

    def locate(self, addrs: Sequence[int]) -> Tuple[List[int], List[int]]:
        """The same as lists, for a list of ints: one by one, or through
        :meth:`find` when :func:`is_bulk`."""
        if is_bulk(addrs):
            import numpy as np
            idx, off = self.find(np.array(addrs, dtype=np.uint64))
            return idx.tolist(), off.tolist()
        st, en = self.start_list, self.end_list
        out_i: List[int] = []
        out_o: List[int] = []
        for a in addrs:
            i = bisect_right(st, a) - 1
            if i >= 0 and a < en[i]:
                out_i.append(i)
                out_o.append(a - st[i])
            else:
                out_i.append(-1)
                out_o.append(0)
        return out_i, out_o
