"""User addresses to names: a process's executable mappings (``/proc/PID/maps``)
and the ELF symbol tables of the files behind them.

An address inside a file mapping becomes a file offset (``addr - start +
pgoff``), then the ELF's own virtual address through its PT_LOAD segments
(so position-independent executables and shared libraries resolve wherever
they were loaded), then a symbol.  Anonymous executable memory is looked up
in ``/tmp/perf-PID.map`` when the process writes one (JITs, CPython's
``-X perf``).  Files are opened through ``/proc/PID/root`` so a process in
another mount namespace resolves against its own files.  The mappings are
read when a :class:`ProcessSymbols` is made: a process that has exited by
then leaves its frames ``[unknown]`` (counted as ``process gone``).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from ..user.procfs import read_maps_text
from .elfsyms import ElfSymbols, elf_symbols
from .frames import UNKNOWN, Frame, Stats
from .table import SymbolTable, as_ints, is_bulk

__all__ = ["Mapping", "ProcessSymbols", "read_maps", "read_maps_text"]


class Mapping:
    """One executable mapping of a process."""

    __slots__ = ("start", "end", "offset", "path")

    def __init__(self, start: int, end: int, offset: int, path: str) -> None:
        self.start, self.end, self.offset, self.path = start, end, offset, path

    def __repr__(self) -> str:
        return f"<Mapping {self.start:#x}-{self.end:#x} +{self.offset:#x} {self.path}>"


def read_maps(pid: int, text: Optional[str] = None) -> Optional[List[Mapping]]:
    """The executable mappings of ``pid`` (None when the process is gone);
    ``text``: its maps as :func:`read_maps_text` read them earlier."""
    if text is None:
        text = read_maps_text(pid)
        if text is None:
            return None
    out = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5 or "x" not in parts[1]:
            continue
        lo, hi = parts[0].split("-")
        path = parts[5].strip() if len(parts) > 5 else ""
        out.append(Mapping(int(lo, 16), int(hi, 16), int(parts[2], 16), path))
    out.sort(key=lambda m: m.start)
    return out


def _perf_map(pid: int) -> Optional[SymbolTable]:
    try:
        with open(f"/tmp/perf-{pid}.map") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    starts, sizes, names = [], [], []
    for line in lines:
        parts = line.split(" ", 2)
        if len(parts) == 3:
            try:
                starts.append(int(parts[0], 16))
                sizes.append(int(parts[1], 16))
            except ValueError:
                continue
            names.append(parts[2])
    return SymbolTable(starts, names, sizes) if starts else None


class ProcessSymbols:
    """Symbolises addresses of one process (its mappings as read at creation)."""

    def __init__(self, pid: int, stats: Optional[Stats] = None,
                 maps_text: Optional[str] = None,
                 earlier: Optional["ProcessSymbols"] = None) -> None:
        """``maps_text``: the process's maps as read earlier (read_maps_text),
        for a process that may have exited since.  ``earlier``: the same
        process's symbols from before (an image it exec'd away from): an
        address in none of these mappings is looked up there."""
        self.pid = pid
        self.earlier = earlier
        self.stats = stats if stats is not None else Stats()
        self.maps = read_maps(pid, maps_text)
        maps = self.maps or []
        # the mappings as a table: a mapping's index for each address
        self._in_map = SymbolTable([m.start for m in maps], list(range(len(maps))),
                                   [m.end - m.start for m in maps])
        self._files: Dict[str, Optional[ElfSymbols]] = {}
        self._perf: Optional[SymbolTable] = None
        self._perf_read = False

    @property
    def alive(self) -> bool:
        return self.maps is not None

    def _file(self, path: str) -> Optional[ElfSymbols]:
        if path not in self._files:
            syms = None
            for p in (f"/proc/{self.pid}/root{path}", path):
                try:
                    syms = elf_symbols(p)
                    break
                except Exception:  # unreadable, not ELF, damaged: no symbols from it
                    continue
            self._files[path] = syms
        return self._files[path]

    def perf_map(self) -> Optional[SymbolTable]:
        if not self._perf_read:
            self._perf, self._perf_read = _perf_map(self.pid), True
        return self._perf

    def symbolize(self, addrs: Any) -> List[Frame]:
        """One :class:`Frame` per address."""
        a = as_ints(addrs)
        self.stats.addresses += len(a)
        if self.maps is None:
            self.stats.miss("process gone", len(a))
            return [Frame(x, UNKNOWN, 0, None) for x in a]
        out: List[Optional[Frame]] = [None] * len(a)
        groups: Dict[int, List[int]] = {}          # mapping index -> positions in a
        idx, _ = self._in_map.locate(a)
        maps_of = self._in_map.names
        for i, t in enumerate(idx):
            groups.setdefault(maps_of[t] if t >= 0 else -1, []).append(i)
        for m, where_l in groups.items():
            sub = [a[i] for i in where_l]
            if m < 0 and self.earlier is not None:
                self.stats.addresses -= len(sub)          # counted again there
                self.earlier.stats = self.stats
                for i, f in zip(where_l, self.earlier.symbolize(sub)):
                    out[i] = f
                continue
            if m < 0:
                self.stats.miss("no mapping", len(sub))
                for i, x in zip(where_l, sub):
                    out[i] = Frame(x, UNKNOWN, 0, None)
                continue
            self._resolve(self.maps[m], sub, where_l, out)
        return out  # type: ignore[return-value]

    def _resolve(self, mp: Mapping, addrs: List[int], where: List[int],
                 out: List[Optional[Frame]]) -> None:
        path = mp.path
        names: List[str]
        if path.startswith("/"):
            elf = self._file(path)
            if elf is None:
                self._fill(addrs, where, out, None, None, path, "unreadable file")
                return
            offsets = [x - mp.start + mp.offset for x in addrs]
            if is_bulk(offsets):
                vaddr = elf.file_to_vaddr(offsets).tolist()
            else:
                vaddr = elf.vaddrs(offsets)
            idx, off = elf.table.locate(vaddr)
            self._fill(addrs, where, out, idx, off, path, "no symbol", elf.name)
            return
        table = self.perf_map() if not path or path.startswith("[anon") else None
        if table is None:
            self._fill(addrs, where, out, None, None, path or None, "no symbol")
            return
        idx, off = table.locate(addrs)
        names = table.names
        self._fill(addrs, where, out, idx, off, f"/tmp/perf-{self.pid}.map", "no symbol",
                   lambda i: names[i])

    def _fill(self, addrs: List[int], where: List[int], out: List[Optional[Frame]],
              idx: Optional[List[int]], off: Optional[List[int]], module: Optional[str],
              reason: str, name: "Optional[object]" = None) -> None:
        if idx is None or off is None or name is None:
            self.stats.miss(reason, len(addrs))
            for i, x in zip(where, addrs):
                out[i] = Frame(x, UNKNOWN, 0, module)
            return
        self.stats.miss(reason, sum(1 for s in idx if s < 0))
        cache: Dict[int, str] = {}
        for i, x, s, o in zip(where, addrs, idx, off):
            if s < 0:
                out[i] = Frame(x, UNKNOWN, 0, module)
            else:
                nm = cache.get(s)
                if nm is None:
                    nm = cache[s] = name(s)  # type: ignore[operator]
                out[i] = Frame(x, nm, o, module)


def process_symbols(pid: int, cache: Optional[Dict[int, ProcessSymbols]] = None,
                    stats: Optional[Stats] = None) -> ProcessSymbols:
    """``ProcessSymbols(pid)``, reused from ``cache`` when given."""
    if cache is None:
        return ProcessSymbols(pid, stats)
    ps = cache.get(pid)
    if ps is None:
        ps = cache[pid] = ProcessSymbols(pid, stats)
    return ps


