"""A sorted address table searched in bulk (numpy ``searchsorted``)."""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["SymbolTable"]


class SymbolTable:
    """Symbols sorted by start address; :meth:`find` resolves many addresses at once.

    ``sizes`` may be None (kallsyms gives none): a symbol then ends where the
    next one starts.  With sizes, an address past a symbol's end and before
    the next symbol is not that symbol's (a gap: padding, stripped code).
    """

    __slots__ = ("starts", "ends", "names")

    def __init__(self, starts: Any, names: Sequence[Any],
                 sizes: Optional[Any] = None, end: Optional[int] = None) -> None:
        s = np.asarray(starts, dtype=np.uint64)
        order = np.argsort(s, kind="stable")
        self.starts = s[order]
        nm = [names[i] for i in order.tolist()]
        if sizes is not None:
            z = np.asarray(sizes, dtype=np.uint64)[order]
            ends = self.starts + z
            # a zero-sized symbol (assembly labels) extends to the next symbol
            nxt = np.empty_like(self.starts)
            if len(nxt):
                nxt[:-1] = self.starts[1:]
                nxt[-1] = np.uint64(end if end is not None else int(self.starts[-1]) + 1)
            self.ends = np.where(z == 0, nxt, ends)
        else:
            ends = np.empty_like(self.starts)
            if len(ends):
                ends[:-1] = self.starts[1:]
                ends[-1] = np.uint64(end if end is not None else int(self.starts[-1]) + 4096)
            self.ends = ends
        self.names: List[Any] = nm

    def __len__(self) -> int:
        return len(self.names)

    def find(self, addrs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """For each address (uint64 array): the index of its symbol (-1 where
        none covers it) and its offset into that symbol."""
        a = np.asarray(addrs, dtype=np.uint64)
        idx = np.searchsorted(self.starts, a, side="right").astype(np.int64) - 1
        ok = idx >= 0
        safe = np.where(ok, idx, 0)
        if len(self.starts):
            ok &= a < self.ends[safe]
            off = np.where(ok, a - self.starts[safe], 0).astype(np.int64)
        else:
            ok[:] = False
            off = np.zeros(len(a), dtype=np.int64)
        return np.where(ok, idx, -1), off
