"""Kernel addresses to names: ``/proc/kallsyms`` (vmlinux and modules).

The table is read once (:func:`kernel_symbols`, cached; ``refresh=True``
rereads it after modules come and go) and searched in bulk.  Reading
addresses needs root or ``kptr_restrict`` 0: when every address reads as
zero the table is empty and every frame is ``[unknown]`` (the stats say why).
"""
from __future__ import annotations

import threading
import time
from typing import Any, List, Optional, Sequence

import numpy as np

from .frames import UNKNOWN, Frame, Stats
from .table import SymbolTable

__all__ = ["KernelSymbols", "kernel_symbols", "KALLSYMS"]

KALLSYMS = "/proc/kallsyms"
MODULES = "/proc/modules"
_TEXT = frozenset("tTwW")
# kallsyms gives no sizes: a symbol ends where the next starts, but no
# function runs on past this many bytes (the gap after the last symbol of
# the kernel image or of a module is not that symbol's).
MAX_FUNCTION = 1 << 20


class KernelSymbols:
    """The kernel's text symbols; :meth:`symbolize` turns addresses into frames."""

    def __init__(self, text: str, modules: Optional[str] = None) -> None:
        """``text``: kallsyms' lines; ``modules``: /proc/modules' lines (each
        module's load address and size end its last symbol, so an address in
        memory no symbol covers -- a BPF program the kernel does not list --
        is not taken for the preceding module's last function)."""
        starts: List[int] = []
        names: List[str] = []
        mods: List[Optional[str]] = []
        self.restricted = False
        #: time.monotonic() when the text was read (kernel_symbols sets it)
        self.read_at = time.monotonic()
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 3 or parts[1] not in _TEXT:
                continue
            addr = int(parts[0], 16)
            if addr == 0:
                self.restricted = True
                continue
            if parts[2].startswith(("__pfx_", "__cfi_")):
                continue    # the padding before a function, never a return address
            starts.append(addr)
            names.append(parts[2])
            mods.append(parts[3][1:-1] if len(parts) > 3 else None)
        self.table = SymbolTable(starts, list(range(len(names))))
        order: List[Any] = self.table.names  # original indices, sorted by address
        self.names = [names[i] for i in order]
        self.modules = [mods[i] for i in order]
        st = self.table.starts
        if len(st):
            ends = np.minimum(self.table.ends, st + np.uint64(MAX_FUNCTION))
            extents = _module_extents(modules or "")
            if extents:
                cap = np.array([extents.get(m, 0) if m else 0 for m in self.modules],
                               dtype=np.uint64)
                ends = np.where(cap > 0, np.minimum(ends, cap), ends)
            self.table.ends = ends
        self.stats = Stats()

    def __len__(self) -> int:
        return len(self.names)

    def lookup(self, addrs: Any) -> "tuple[np.ndarray, np.ndarray]":
        """Bulk: (symbol index or -1, offset) per address."""
        a = np.asarray(addrs, dtype=np.uint64)
        self.stats.addresses += len(a)
        idx, off = self.table.find(a)
        self.stats.miss("no symbol", int((idx < 0).sum()))
        return idx, off

    def symbolize(self, addrs: Any) -> List[Frame]:
        """One :class:`Frame` per address, ``[unknown]`` where no symbol covers it."""
        a = np.asarray(addrs, dtype=np.uint64)
        idx, off = self.lookup(a)
        names, mods = self.names, self.modules
        out = []
        for ad, i, o in zip(a.tolist(), idx.tolist(), off.tolist()):
            if i < 0:
                out.append(Frame(ad, UNKNOWN, 0, None))
            else:
                out.append(Frame(ad, names[i], o, mods[i]))
        return out

    def names_of(self, addrs: Any) -> List[str]:
        """Bulk: the symbol name per address (``[unknown]`` where none), without
        building frames -- what a profile with many samples needs."""
        idx, _ = self.lookup(addrs)
        names = np.asarray(self.names + [UNKNOWN], dtype=object)
        return list(names[idx])  # -1 picks the trailing [unknown]

    def name(self, addr: int) -> str:
        """``symbol`` for one address (``[unknown]`` where none)."""
        return self.symbolize([addr])[0].symbol


def _module_extents(text: str) -> "dict[str, int]":
    """/proc/modules: ``name size refs deps state address`` -> {name: end}."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 6:
            try:
                out[parts[0]] = int(parts[5], 16) + int(parts[1])
            except ValueError:
                continue
    return out


_cache: Optional[KernelSymbols] = None
_lock = threading.Lock()


def kernel_symbols(refresh: bool = False, path: str = KALLSYMS) -> KernelSymbols:
    """The kernel's symbol table (read once per process)."""
    global _cache
    with _lock:
        if _cache is None or refresh or path != KALLSYMS:
            read_at = time.monotonic()
            with open(path) as f:
                text = f.read()
            modules = None
            if path == KALLSYMS:
                try:
                    with open(MODULES) as f:
                        modules = f.read()
                except OSError:
                    pass
            table = KernelSymbols(text, modules)
            table.read_at = read_at
            if path != KALLSYMS:
                return table
            _cache = table
        return _cache
