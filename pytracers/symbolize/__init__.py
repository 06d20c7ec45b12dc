"""Addresses to names: kernel frames through ``/proc/kallsyms``, user frames
through a process's mappings and the ELF symbol tables of its files.

    from pytracers.symbolize import Symbolizer
    sym = Symbolizer()
    sym.kernel([0xffffffff81234567])          # [Frame(address, symbol, offset, module)]
    sym.user(pid, [0x55d0c0de1234, ...])

Tables are sorted: a few addresses are looked up one by one (``bisect``;
kallsyms' lines are kept sorted and only the lines found are parsed), many in
bulk over numpy arrays (from ``table.BULK`` = 65,536 addresses at once, or
``table.BULK_LOADED`` = 1,024 when numpy is already imported): a profile does
not import numpy for its symbols.  ELF files are cached by build id.
``[unknown]`` is given only where no symbol covers an address, and
:attr:`Symbolizer.stats` counts those by reason.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from .frames import UNKNOWN, Frame, Stats, stack_addresses

if TYPE_CHECKING:
    from .elfsyms import ElfSymbols, elf_symbols
    from .kernel import KernelSymbols, kernel_symbols
    from .table import SymbolTable
    from .user import Mapping, ProcessSymbols, process_symbols, read_maps

# the modules are imported when first used (module __getattr__ below): a
# profiler attaches before it needs any.
_LAZY = {"ElfSymbols": ".elfsyms", "elf_symbols": ".elfsyms", "KernelSymbols": ".kernel",
         "kernel_symbols": ".kernel", "SymbolTable": ".table", "Mapping": ".user",
         "ProcessSymbols": ".user", "process_symbols": ".user", "read_maps": ".user"}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value
    return value

__all__ = ["Frame", "Stats", "UNKNOWN", "Symbolizer", "stack_addresses", "KernelSymbols",
           "kernel_symbols", "ProcessSymbols", "ElfSymbols", "elf_symbols", "SymbolTable",
           "Mapping", "read_maps"]


class Symbolizer:
    """Kernel and user symbolisation with shared caches and one set of counts.

    Make one per profile or trace session: each process's mappings are read
    the first time one of its addresses is asked for (``refresh(pid)``
    forgets them, e.g. after the process loaded a library)."""

    def __init__(self, processes: Optional[Dict[int, "ProcessSymbols"]] = None, *,
                 captured: bool = False) -> None:
        """``processes``: mappings already read (pid -> ProcessSymbols), e.g.
        while a profile ran, for processes that may have exited since.
        ``captured``: every kernel address this Symbolizer will see was
        captured before it was made (a finished profile): a kallsyms table
        read after that already lists every BPF program they can fall in."""
        self._made = time.monotonic() if captured else None
        self.stats = Stats()
        self._procs: Dict[int, "ProcessSymbols"] = dict(processes or {})
        for ps in self._procs.values():
            ps.stats = self.stats
        self._kernel: Optional["KernelSymbols"] = None
        self._fresh = False

    def kernel(self, addrs: Any) -> List[Frame]:
        """Kernel frames.  BPF programs come and go, and their symbols with
        them: the first time a frame falls in a BPF program (module ``bpf``)
        or on no symbol, kallsyms is read again (once per Symbolizer, and not
        when its table was read after the addresses were ``captured``) and the
        addresses are looked up in the fresh table."""
        from .kernel import kernel_symbols
        if self._kernel is None:
            self._kernel = kernel_symbols()
            if self._made is not None and self._kernel.read_at >= self._made:
                self._fresh = True           # read after the addresses: nothing to reread
        k = self._kernel
        before = k.stats.unknown.get("no symbol", 0)
        frames = k.symbolize(addrs)
        if not self._fresh and any(f.module == "bpf" or f.symbol == UNKNOWN for f in frames):
            self._fresh = True
            k = self._kernel = kernel_symbols(refresh=True)
            before = k.stats.unknown.get("no symbol", 0)
            frames = k.symbolize(addrs)
        self.stats.addresses += len(frames)
        self.stats.miss("no symbol", k.stats.unknown.get("no symbol", 0) - before)
        return frames

    def user(self, pid: int, addrs: Any) -> List[Frame]:
        from .user import process_symbols
        return process_symbols(pid, self._procs, self.stats).symbolize(addrs)

    def refresh(self, pid: Optional[int] = None) -> None:
        if pid is None:
            self._procs.clear()
        else:
            self._procs.pop(pid, None)
