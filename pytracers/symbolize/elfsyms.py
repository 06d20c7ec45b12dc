"""One ELF file's function symbols, keyed by build id, for user-space frames.

The section and program headers come from pyelftools; the symbol tables
themselves (``.symtab``, else ``.dynsym``; both when the first is partial)
are read as one numpy record array each, so a 40,000-symbol library loads in
milliseconds.  Where the file carries no ``.symtab`` and a separate debug
file exists under ``/usr/lib/debug/.build-id/`` its table is used too.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .table import SymbolTable

__all__ = ["ElfSymbols", "elf_symbols", "build_id"]

DEBUG_ROOT = "/usr/lib/debug/.build-id"
_STT_FUNC = 2
_STT_GNU_IFUNC = 10
_PT_LOAD = 1
_SYM64 = np.dtype([("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"),
                   ("value", "<u8"), ("size", "<u8")])


def _sym_dtype(elf: Any) -> np.dtype:
    little = getattr(elf, "little_endian", True)
    return _SYM64 if little else _SYM64.newbyteorder(">")


def build_id(elf: Any) -> Optional[str]:
    """The GNU build id (hex) of an open ``ELFFile``, None when it has none."""
    for sec in elf.iter_sections():
        if sec["sh_type"] == "SHT_NOTE":
            for note in sec.iter_notes():
                if note["n_type"] == "NT_GNU_BUILD_ID":
                    return str(note["n_desc"])
    return None


class ElfSymbols:
    """The function symbols of one ELF file and its loadable segments."""

    def __init__(self, path: str) -> None:
        from elftools.elf.elffile import ELFFile
        self.path = path
        self.build_id: Optional[str] = None
        self.segments: List[Tuple[int, int, int]] = []   # (p_offset, p_filesz, p_vaddr)
        self.strtabs: List[bytes] = []
        starts: List[np.ndarray] = []
        sizes: List[np.ndarray] = []
        names: List[Tuple[int, int]] = []                # (strtab index, name offset)
        with open(path, "rb") as f:
            elf = ELFFile(f)
            self.build_id = build_id(elf)
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_LOAD":
                    self.segments.append((seg["p_offset"], seg["p_filesz"], seg["p_vaddr"]))
            tables = [elf.get_section_by_name(".symtab"), elf.get_section_by_name(".dynsym")]
            has_symtab = tables[0] is not None
            self._read(f, elf, [t for t in tables if t is not None], starts, sizes, names)
        if not has_symtab and self.build_id:
            dbg = os.path.join(DEBUG_ROOT, self.build_id[:2], self.build_id[2:] + ".debug")
            if os.path.exists(dbg):
                with open(dbg, "rb") as f:
                    elf = ELFFile(f)
                    sec = elf.get_section_by_name(".symtab")
                    if sec is not None:
                        self._read(f, elf, [sec], starts, sizes, names)
                        self.debug_file = dbg
        if starts:
            st = np.concatenate(starts)
            sz = np.concatenate(sizes)
        else:
            st = np.zeros(0, np.uint64)
            sz = np.zeros(0, np.uint64)
        # one entry per start address (.symtab and .dynsym repeat each other)
        st, first = np.unique(st, return_index=True)
        self.table = SymbolTable(st, [names[i] for i in first.tolist()], sz[first])

    def _read(self, f: Any, elf: Any, secs: Sequence[Any],
              starts: List[np.ndarray], sizes: List[np.ndarray],
              names: List[Tuple[int, int]]) -> None:
        dt = _sym_dtype(elf)
        for sec in secs:
            strtab = elf.get_section(sec["sh_link"])
            raw = sec.data()
            syms = np.frombuffer(raw, dtype=dt, count=len(raw) // dt.itemsize)
            kind = syms["info"] & 0xF
            keep = ((kind == _STT_FUNC) | (kind == _STT_GNU_IFUNC)) & (syms["value"] != 0) \
                & (syms["shndx"] != 0)
            sel = syms[keep]
            ti = len(self.strtabs)
            self.strtabs.append(strtab.data())
            starts.append(sel["value"].astype(np.uint64))
            sizes.append(sel["size"].astype(np.uint64))
            names.extend((ti, int(o)) for o in sel["name"].tolist())

    def __len__(self) -> int:
        return len(self.table)

    def name(self, i: int) -> str:
        """The name of symbol ``i`` of the table."""
        ti, off = self.table.names[i]
        tab = self.strtabs[ti]
        end = tab.find(b"\0", off)
        return tab[off:end if end >= 0 else None].decode("utf-8", "replace")

    def file_to_vaddr(self, offsets: np.ndarray) -> np.ndarray:
        """File offsets (as a mapping gives them) to the ELF's virtual addresses,
        through the PT_LOAD segment holding each; 0 where none does."""
        off = np.asarray(offsets, dtype=np.uint64)
        out = np.zeros(len(off), dtype=np.uint64)
        for p_off, p_filesz, p_vaddr in self.segments:
            inside = (off >= np.uint64(p_off)) & (off < np.uint64(p_off + p_filesz))
            out = np.where(inside, off - np.uint64(p_off) + np.uint64(p_vaddr), out)
        return out


_cache: Dict[object, ElfSymbols] = {}
_by_build_id: Dict[str, ElfSymbols] = {}
_lock = threading.Lock()


def elf_symbols(path: str) -> ElfSymbols:
    """The symbols of the ELF file at ``path``, cached by build id (the same
    library seen through another path or another process's root is read
    once) and, for files without one, by device, inode, size and mtime."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            return hit
    syms = ElfSymbols(path)
    with _lock:
        if syms.build_id:
            syms = _by_build_id.setdefault(syms.build_id, syms)
        _cache[key] = syms
    return syms


def clear_cache() -> None:
    """Forget every file read (tests; a long-running profiler after upgrades)."""
    with _lock:
        _cache.clear()
        _by_build_id.clear()
