"""Kernel addresses to names: ``/proc/kallsyms`` (vmlinux and modules).

The table is read once (:func:`kernel_symbols`, cached; ``refresh=True``
rereads it after modules come and go).  Its text-symbol lines are kept as
they are, sorted (the addresses are fixed-width hex: sorting the lines sorts
the addresses): a few addresses are found by bisecting the lines, and only
the lines found are parsed -- no numpy, which costs more to import than a
profile's kernel addresses take to look up.  Many addresses (see
:func:`~pytracers.symbolize.table.is_bulk`) are searched in bulk over numpy
arrays parsed from the same sorted lines on first use; both ways give the
same frames.  Reading addresses needs root or ``kptr_restrict`` 0:
when every address reads as zero the table is empty and every frame is
``[unknown]`` (the stats say why).
"""
from __future__ import annotations

import re
import threading
import time
from bisect import bisect_right
from typing import Any, Dict, List, Optional, Tuple, Union

from .frames import UNKNOWN, Frame, Stats
from .table import SymbolTable, as_ints, is_bulk

__all__ = ["KernelSymbols", "kernel_symbols", "KALLSYMS"]

KALLSYMS = "/proc/kallsyms"
MODULES = "/proc/modules"
# ``address type name`` and, for a module's symbol, ``\t[module]``; the
# text (code) types only
_TEXT_LINE = re.compile(r"^([0-9a-fA-F]{1,16}) [tTwW] (\S+)(?:\t\[([^\]\n]*)\])?[ \t]*$", re.M)
_PADDING = ("__pfx_", "__cfi_")     # the padding before a function: never a return address
_PADDING_B = tuple(p.encode() for p in _PADDING)
_TEXT_TYPES = b"tTwW"
_TEXT_CODES = frozenset(_TEXT_TYPES)
ADDR_WIDTHS = (16, 8)                # %px on 64-bit and 32-bit kernels
NEWLINE, TAB, SPACE = ord("\n"), ord("\t"), ord(" ")
# kallsyms gives no sizes: a symbol ends where the next starts, but no
# function runs on past this many bytes (the gap after the last symbol of
# the kernel image or of a module is not that symbol's).
MAX_FUNCTION = 1 << 20
_LAST_SYMBOL = 4096                  # a table's last symbol, without a next one

_Parsed = Tuple[Any, List[str], List[Optional[str]]]


def _parse_any(text: str) -> _Parsed:
    """kallsyms' text symbols (start, name, module) by one regular-expression
    pass: any address width."""
    found = _TEXT_LINE.findall(text)
    found = [t for t in found if not t[1].startswith(_PADDING)]
    return [int(a, 16) for a, _, _ in found], [n for _, n, _ in found], \
        [m or None for _, _, m in found]


def _parse_fixed(raw: bytes, width: int) -> Optional[_Parsed]:
    """The same in numpy passes over the bytes, for the kernel's layout (every
    line ``<width hex digits> <type> <name>[\\t[module]]``, ASCII): ~4x
    faster than the regular expression on a kernel's ~120,000 lines.  None
    when the text is not laid out so."""
    import numpy as np
    if not raw.isascii() or not raw.endswith(b"\n"):
        return None
    text = raw.decode("ascii")
    buf = np.frombuffer(raw, np.uint8)
    ends = np.flatnonzero(buf == NEWLINE)         # not empty: the text ends with one
    begins = np.empty_like(ends)
    begins[0] = 0
    begins[1:] = ends[:-1] + 1
    lengths: Any = ends - begins
    if int(lengths.min()) < width + 4 or \
            (buf[begins + width] != SPACE).any() or \
            (buf[begins + width + 2] != SPACE).any():
        return None
    kind = buf[begins + width + 1]
    keep = np.isin(kind, np.frombuffer(_TEXT_TYPES, np.uint8))
    name_at = begins + width + 3
    for pad in _PADDING_B:
        p = np.frombuffer(pad, np.uint8)
        room = (ends - name_at) >= len(p)
        head = buf[np.minimum(name_at[:, None] + np.arange(len(p)), len(buf) - 1)]
        keep &= ~(room & (head == p).all(axis=1))
    begins, ends, name_at = begins[keep], ends[keep], name_at[keep]
    hexval = np.full(256, 255, dtype=np.uint8)
    hexval[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10, dtype=np.uint8)
    hexval[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16, dtype=np.uint8)
    hexval[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16, dtype=np.uint8)
    digits = hexval[buf[begins[:, None] + np.arange(width)]]
    if (digits == 255).any():
        return None
    starts = np.zeros(len(begins), dtype=np.uint64)
    for i in range(width):
        starts = (starts << np.uint64(4)) | digits[:, i].astype(np.uint64)
    # a module's symbol: the name ends at a tab, "[module]" follows
    tabs = np.flatnonzero(buf == TAB)
    nxt = np.searchsorted(tabs, name_at)
    tab_at = np.append(tabs, len(buf))[nxt]
    has_mod = tab_at < ends
    name_end = np.where(has_mod, tab_at, ends)
    names = [text[a:b] for a, b in zip(name_at.tolist(), name_end.tolist())]
    mods: List[Optional[str]] = [None] * len(names)
    seen: Dict[str, str] = {}
    for i, a, b in zip(np.flatnonzero(has_mod).tolist(), tab_at[has_mod].tolist(),
                       ends[has_mod].tolist()):
        m = text[a + 1:b].strip()
        if not (m.startswith("[") and m.endswith("]")):
            return None
        mods[i] = seen.setdefault(m, m[1:-1])
    if any(" " in n or "\t" in n for n in names[:: max(1, len(names) // 256)]):
        return None
    return starts, names, mods


def _sorted_lines(raw: bytes) -> Tuple[int, Optional[List[bytes]]]:
    """(address width, the text-symbol lines sorted) for the kernel's layout;
    (0, None) for any other."""
    width = raw.find(b" ")
    first_end = raw.find(b"\n")
    if width not in ADDR_WIDTHS or not raw.endswith(b"\n") or first_end < width:
        return 0, None
    lines = raw.split(b"\n")
    lines.pop()
    try:
        keep = [ln for ln in lines if ln[width + 1] in _TEXT_CODES]
    except IndexError:           # a line too short for the layout
        return 0, None
    keep.sort()
    return width, keep


class KernelSymbols:
    """The kernel's text symbols; :meth:`symbolize` turns addresses into frames."""

    def __init__(self, text: Union[str, bytes], modules: Optional[str] = None,
                 read_at: Optional[float] = None) -> None:
        """``text``: kallsyms' lines; ``modules``: /proc/modules' lines (each
        module's load address and size end its last symbol, so an address in
        memory no symbol covers -- a BPF program the kernel does not list --
        is not taken for the preceding module's last function); ``read_at``:
        the ``time.monotonic()`` before the text was read."""
        #: time.monotonic() when the text was read (default: now)
        self.read_at = time.monotonic() if read_at is None else read_at
        raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else bytes(text)
        self._extents = _module_extents(modules or "")
        self.stats = Stats()
        self._full: Optional[Tuple[SymbolTable, List[str], List[Optional[str]]]] = None
        self._entries: Dict[int, Tuple[int, int, str, Optional[str]]] = {}
        self._width, self._lines = _sorted_lines(raw)
        self._raw: Optional[bytes] = None
        self._first = 0
        self.restricted = False
        if self._lines is None:
            self._raw = raw
            self._build()
        else:
            w, lines = self._width, self._lines
            # zero addresses (hidden by kptr_restrict) sort first
            self._first = bisect_right(lines, b"0" * w + b"\x7f")
            self.restricted = any(not ln.startswith(_PADDING_B, w + 3)
                                  for ln in lines[:self._first])

    # -- the bulk table: numpy arrays of every symbol, made on first use --

    def _build(self) -> Tuple[SymbolTable, List[str], List[Optional[str]]]:
        if self._full is not None:
            return self._full
        if self._lines is not None:
            raw = b"\n".join(self._lines) + b"\n" if self._lines else b""
            parsed = _parse_fixed(raw, self._width) if raw else ([], [], [])
        else:
            raw = self._raw or b""
            width = raw.find(b" ")
            parsed = _parse_fixed(raw, width) if width in ADDR_WIDTHS else None
        if parsed is None:
            parsed = _parse_any(raw.decode("utf-8", "replace"))
        starts, names, mods = as_ints(parsed[0]), parsed[1], parsed[2]
        if any(s == 0 for s in starts):
            self.restricted = True
            keep = [i for i, s in enumerate(starts) if s]
            starts = [starts[i] for i in keep]
            names = [names[i] for i in keep]
            mods = [mods[i] for i in keep]
        table = SymbolTable(starts, list(range(len(names))), end=None)
        order: List[Any] = table.names  # original indices, sorted by address
        names = [names[i] for i in order]
        mods = [mods[i] for i in order]
        ends = [min(e, s + MAX_FUNCTION) for s, e in zip(table.start_list, table.end_list)]
        if self._extents:
            caps = [self._extents.get(m, 0) if m else 0 for m in mods]
            ends = [min(e, c) if c > 0 else e for e, c in zip(ends, caps)]
        table.end_list = ends
        self._full = (table, names, mods)
        return self._full

    @property
    def table(self) -> SymbolTable:
        return self._build()[0]

    @property
    def names(self) -> List[str]:
        return self._build()[1]

    @property
    def modules(self) -> List[Optional[str]]:
        return self._build()[2]

    def __len__(self) -> int:
        return len(self.names)

    def lookup(self, addrs: Any) -> "tuple[Any, Any]":
        """Bulk: (symbol index or -1, offset) per address (numpy arrays;
        indices into :attr:`names`)."""
        import numpy as np
        a = np.asarray(addrs, dtype=np.uint64)
        self.stats.addresses += len(a)
        idx, off = self.table.find(a)
        self.stats.miss("no symbol", int((idx < 0).sum()))
        return idx, off

    # -- a few addresses: bisect the sorted lines --

    def _entry(self, i: int) -> Tuple[int, int, str, Optional[str]]:
        """(start, end, name, module) of sorted line ``i``."""
        got = self._entries.get(i)
        if got is not None:
            return got
        lines, w = self._lines or [], self._width
        ln = lines[i]
        start = int(ln[:w], 16)
        j = i + 1
        while j < len(lines) and lines[j].startswith(_PADDING_B, w + 3):
            j += 1
        end = int(lines[j][:w], 16) if j < len(lines) else start + _LAST_SYMBOL
        end = min(end, start + MAX_FUNCTION)
        rest = ln[w + 3:]
        module: Optional[str] = None
        tab = rest.find(b"\t")
        if tab >= 0:
            mod = rest[tab + 1:].strip()
            rest = rest[:tab]
            if mod.startswith(b"[") and mod.endswith(b"]"):
                module = mod[1:-1].decode("utf-8", "replace")
                cap = self._extents.get(module, 0)
                if cap > 0:
                    end = min(end, cap)
        got = self._entries[i] = (start, end, rest.decode("utf-8", "replace"), module)
        return got

    def _symbolize_few(self, addrs: List[int]) -> List[Frame]:
        lines, w, first = self._lines or [], self._width, self._first
        top = 1 << (4 * w)
        out = []
        missed = 0
        for a in addrs:
            i = (bisect_right(lines, b"%0*x\x7f" % (w, a)) if 0 <= a < top else len(lines)) - 1
            while i >= first and lines[i].startswith(_PADDING_B, w + 3):
                i -= 1
            if i >= first:
                start, end, name, module = self._entry(i)
                if start <= a < end:
                    out.append(Frame(a, name, a - start, module))
                    continue
            out.append(Frame(a, UNKNOWN, 0, None))
            missed += 1
        self.stats.addresses += len(addrs)
        self.stats.miss("no symbol", missed)
        return out

    def symbolize(self, addrs: Any) -> List[Frame]:
        """One :class:`Frame` per address, ``[unknown]`` where no symbol covers it."""
        a = as_ints(addrs)
        if self._lines is not None and not is_bulk(a):
            return self._symbolize_few(a)
        import numpy as np
        idx, off = self.lookup(np.array(a, dtype=np.uint64))
        names, mods = self.names, self.modules
        out = []
        for ad, i, o in zip(a, idx.tolist(), off.tolist()):
            if i < 0:
                out.append(Frame(ad, UNKNOWN, 0, None))
            else:
                out.append(Frame(ad, names[i], o, mods[i]))
        return out

    def names_of(self, addrs: Any) -> List[str]:
        """Bulk: the symbol name per address (``[unknown]`` where none), without
        building frames -- what a profile with many samples needs."""
        import numpy as np
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
            with open(path, "rb") as f:
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
