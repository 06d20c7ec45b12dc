"""Kernel addresses to names: ``/proc/kallsyms`` (vmlinux and modules).

The table is read once (:func:`kernel_symbols`, cached; ``refresh=True``
rereads it after modules come and go) and searched in bulk.  Reading
addresses needs root or ``kptr_restrict`` 0: when every address reads as
zero the table is empty and every frame is ``[unknown]`` (the stats say why).
"""
from __future__ import annotations

import re
import threading
import time
from typing import Any, List, Optional, Sequence

import numpy as np

from .frames import UNKNOWN, Frame, Stats
from .table import SymbolTable

__all__ = ["KernelSymbols", "kernel_symbols", "KALLSYMS"]

KALLSYMS = "/proc/kallsyms"
MODULES = "/proc/modules"
# ``address type name`` and, for a module's symbol, ``\t[module]``; the
# text (code) types only
_TEXT_LINE = re.compile(r"^([0-9a-fA-F]{1,16}) [tTwW] (\S+)(?:\t\[([^\]\n]*)\])?[ \t]*$", re.M)
_PADDING = ("__pfx_", "__cfi_")     # the padding before a function: never a return address
_TEXT_TYPES = np.frombuffer(b"tTwW", np.uint8)
ADDR_DIGITS = 16                     # a 64-bit kernel's addresses
NEWLINE, TAB, SPACE = ord("\n"), ord("\t"), ord(" ")
# kallsyms gives no sizes: a symbol ends where the next starts, but no
# function runs on past this many bytes (the gap after the last symbol of
# the kernel image or of a module is not that symbol's).
MAX_FUNCTION = 1 << 20


def _parse_any(text: str) -> "tuple[np.ndarray, List[str], List[Optional[str]]]":
    """kallsyms' text symbols (start, name, module) by one regular-expression
    pass: any address width."""
    found = _TEXT_LINE.findall(text)
    found = [t for t in found if not t[1].startswith(_PADDING)]
    starts = np.array([int(a, 16) for a, _, _ in found], dtype=np.uint64)
    return starts, [n for _, n, _ in found], [m or None for _, _, m in found]


_HEX = np.full(256, 255, dtype=np.uint8)
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10, dtype=np.uint8)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16, dtype=np.uint8)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16, dtype=np.uint8)


def _parse_fixed(text: str) -> "Optional[tuple[np.ndarray, List[str], List[Optional[str]]]]":
    """The same in numpy passes over the bytes, for the usual layout (every
    line ``<16 hex digits> <type> <name>[\\t[module]]``, ASCII): ~4x faster
    than the regular expression on a kernel's ~120,000 lines, most of a
    profile's fixed cost.  None when the text is not laid out so."""
    raw = text.encode("ascii", "replace")
    if len(raw) != len(text) or not raw.endswith(b"\n"):
        return None
    buf = np.frombuffer(raw, np.uint8)
    ends = np.flatnonzero(buf == NEWLINE)         # not empty: the text ends with one
    begins = np.empty_like(ends)
    begins[0] = 0
    begins[1:] = ends[:-1] + 1
    lengths: Any = ends - begins
    if int(lengths.min()) < ADDR_DIGITS + 4 or \
            (buf[begins + ADDR_DIGITS] != SPACE).any() or \
            (buf[begins + ADDR_DIGITS + 2] != SPACE).any():
        return None
    kind = buf[begins + ADDR_DIGITS + 1]
    keep = np.isin(kind, _TEXT_TYPES)
    name_at = begins + ADDR_DIGITS + 3
    for pad in _PADDING:
        p = np.frombuffer(pad.encode(), np.uint8)
        room = (ends - name_at) >= len(p)
        head = buf[np.minimum(name_at[:, None] + np.arange(len(p)), len(buf) - 1)]
        keep &= ~(room & (head == p).all(axis=1))
    begins, ends, name_at = begins[keep], ends[keep], name_at[keep]
    digits = _HEX[buf[begins[:, None] + np.arange(ADDR_DIGITS)]]
    if (digits == 255).any():
        return None
    starts = np.zeros(len(begins), dtype=np.uint64)
    for i in range(ADDR_DIGITS):
        starts = (starts << np.uint64(4)) | digits[:, i].astype(np.uint64)
    # a module's symbol: the name ends at a tab, "[module]" follows
    tabs = np.flatnonzero(buf == TAB)
    nxt = np.searchsorted(tabs, name_at)
    tab_at = np.append(tabs, len(buf))[nxt]
    has_mod = tab_at < ends
    name_end = np.where(has_mod, tab_at, ends)
    names = [text[a:b] for a, b in zip(name_at.tolist(), name_end.tolist())]
    mods: List[Optional[str]] = [None] * len(names)
    seen: "dict[str, str]" = {}
    for i, a, b in zip(np.flatnonzero(has_mod).tolist(), tab_at[has_mod].tolist(),
                       ends[has_mod].tolist()):
        m = text[a + 1:b].strip()
        if not (m.startswith("[") and m.endswith("]")):
            return None
        mods[i] = seen.setdefault(m, m[1:-1])
    if any(" " in n or "\t" in n for n in names[:: max(1, len(names) // 256)]):
        return None
    return starts, names, mods


class KernelSymbols:
    """The kernel's text symbols; :meth:`symbolize` turns addresses into frames."""

    def __init__(self, text: str, modules: Optional[str] = None,
                 read_at: Optional[float] = None) -> None:
        """``text``: kallsyms' lines; ``modules``: /proc/modules' lines (each
        module's load address and size end its last symbol, so an address in
        memory no symbol covers -- a BPF program the kernel does not list --
        is not taken for the preceding module's last function); ``read_at``:
        the ``time.monotonic()`` before the text was read."""
        self.restricted = False
        #: time.monotonic() when the text was read (default: now)
        self.read_at = time.monotonic() if read_at is None else read_at
        parsed = _parse_fixed(text)
        if parsed is None:
            parsed = _parse_any(text)
        starts, names, mods = parsed
        zero = starts == 0
        if zero.any():
            self.restricted = True
            keep = np.flatnonzero(~zero).tolist()
            starts = starts[~zero]
            names = [names[i] for i in keep]
            mods = [mods[i] for i in keep]
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
            table = KernelSymbols(text, modules, read_at)
            if path != KALLSYMS:
                return table
            _cache = table
        return _cache
