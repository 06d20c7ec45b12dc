"""One ELF file's function symbols, keyed by build id, for user-space frames.

The file is read directly (no pyelftools: building its section objects parsed
every section of a library, ``.gnu.hash`` included, for two symbol tables):
the ELF header, the program headers (``PT_LOAD`` segments), the section
headers (the ``SHT_NOTE`` sections for the GNU build id, ``SHT_SYMTAB`` and
``SHT_DYNSYM`` with their string tables), each table unpacked with ``struct``
(``.symtab``, else ``.dynsym``; both when the first is partial) -- no numpy,
which a profile of a few processes would otherwise import just for this.  Where the file carries no
``.symtab`` and a separate debug file exists under
``/usr/lib/debug/.build-id/`` its table is used too.  64-bit files of either
byte order are read; anything else (a 32-bit file, a damaged or truncated
one) raises :class:`ElfFormatError`.
"""
from __future__ import annotations

import os
import struct
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

from elftools.common.exceptions import ELFError

from ..user.symbols import ElfReadError
from .table import SymbolTable

__all__ = ["ElfSymbols", "elf_symbols", "ElfFormatError"]

DEBUG_ROOT = "/usr/lib/debug/.build-id"
ELF_MAGIC = b"\x7fELF"
EI_CLASS, EI_DATA, EI_NIDENT = 4, 5, 16
ELFCLASS64 = 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
EHDR64_SIZE, PHDR64_SIZE, SHDR64_SIZE = 64, 56, 64
PT_LOAD = 1
SHT_SYMTAB, SHT_NOTE, SHT_NOBITS, SHT_DYNSYM = 2, 7, 8, 11
SHN_UNDEF = 0
PN_XNUM = 0xFFFF
NT_GNU_BUILD_ID = 3
NOTE_OWNER_GNU = b"GNU"
NHDR_SIZE, NOTE_ALIGN = 12, 4
_STT_FUNC = 2
_STT_GNU_IFUNC = 10
_STT_MASK = 0xF
# struct layouts (byte order prefixed when read): Elf64_Sym name info other
# shndx value size; the ELF header from e_type to e_shstrndx (after e_ident);
# Elf64_Phdr type flags offset vaddr paddr filesz memsz align; Elf64_Shdr name
# type flags addr offset size link info addralign entsize
_SYM64 = "IBBHQQ"
SYM64_SIZE = 24
_EHDR64 = "HHIQQQIHHHHHH"
_PHDR64 = "IIQQQQQQ"
_SHDR64 = "IIQQQQIIQQ"
PH_TYPE, PH_OFFSET, PH_VADDR, PH_FILESZ = 0, 2, 3, 5
SH_TYPE, SH_OFFSET, SH_SIZE, SH_LINK, SH_INFO = 1, 4, 5, 6, 7
_FUNC_TYPES = frozenset({_STT_FUNC, _STT_GNU_IFUNC})


class ElfFormatError(ElfReadError, ELFError):
    """A file given to :class:`ElfSymbols` is not a readable 64-bit ELF file
    (bad magic, another class or byte order, truncated or damaged headers).
    Also an ``elftools`` ``ELFError``, what was raised before this reader."""


def _round4(n: int) -> int:
    return (n + NOTE_ALIGN - 1) & ~(NOTE_ALIGN - 1)


class _Elf:
    """The headers of one open 64-bit ELF file, read with ``os.pread``."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        self.file_size = os.fstat(fd).st_size
        ident = self.read(0, EI_NIDENT, "the ELF identification")
        if ident[:len(ELF_MAGIC)] != ELF_MAGIC:
            raise self.bad("not an ELF file (magic number does not match)")
        if ident[EI_CLASS] != ELFCLASS64:
            raise self.bad(f"ELF class {ident[EI_CLASS]} is not ELFCLASS64")
        if ident[EI_DATA] not in (ELFDATA2LSB, ELFDATA2MSB):
            raise self.bad(f"ELF data encoding {ident[EI_DATA]} is neither LSB nor MSB")
        self.little_endian = ident[EI_DATA] == ELFDATA2LSB
        self.order = "<" if self.little_endian else ">"
        (_, _, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum, _) = \
            struct.unpack(self.order + _EHDR64, self.read(EI_NIDENT, EHDR64_SIZE - EI_NIDENT,
                                                          "the ELF header"))
        self.shdrs: List[Tuple[int, ...]] = []
        if shoff:
            if shentsize != SHDR64_SIZE:
                raise self.bad(f"section header size {shentsize}, not {SHDR64_SIZE}")
            first = self.records(shoff, 1, _SHDR64, SHDR64_SIZE, "section header 0")[0]
            if shnum == 0:                       # extended numbering: the count is in 0
                shnum = first[SH_SIZE]
            if phnum == PN_XNUM:
                phnum = first[SH_INFO]
            self.shdrs = self.records(shoff, shnum, _SHDR64, SHDR64_SIZE, "the section headers")
        self.phdrs: List[Tuple[int, ...]] = []
        if phoff and phnum:
            if phentsize != PHDR64_SIZE:
                raise self.bad(f"program header size {phentsize}, not {PHDR64_SIZE}")
            self.phdrs = self.records(phoff, phnum, _PHDR64, PHDR64_SIZE, "the program headers")

    def bad(self, problem: str) -> ElfFormatError:
        return ElfFormatError(f"{self.path}: {problem}")

    def read(self, offset: int, size: int, what: str) -> bytes:
        """``size`` bytes at ``offset``; a range past the end is an error."""
        if offset < 0 or size < 0 or offset + size > self.file_size:
            raise self.bad(f"{what} ({size} bytes at {offset:#x}) past the end of the "
                           f"file ({self.file_size} bytes)")
        data = os.pread(self.fd, size, offset) if size else b""
        if len(data) != size:
            raise self.bad(f"{what}: short read ({len(data)} of {size} bytes at {offset:#x})")
        return data

    def records(self, offset: int, count: int, fmt: str, size: int, what: str
                ) -> List[Tuple[int, ...]]:
        """``count`` structs of layout ``fmt`` (``size`` bytes each) at ``offset``."""
        return list(struct.iter_unpack(self.order + fmt, self.read(offset, count * size, what)))

    def section(self, i: int) -> Tuple[int, int, int, int]:
        """(type, offset, size, link) of section ``i``."""
        if not 0 <= i < len(self.shdrs):
            raise self.bad(f"section index {i} out of range ({len(self.shdrs)} sections)")
        sh = self.shdrs[i]
        return sh[SH_TYPE], sh[SH_OFFSET], sh[SH_SIZE], sh[SH_LINK]

    def section_data(self, i: int) -> bytes:
        kind, offset, size, _ = self.section(i)
        if kind == SHT_NOBITS:
            return b""
        return self.read(offset, size, f"section {i}")

    def first_of_type(self, kind: int) -> Optional[int]:
        for i, sh in enumerate(self.shdrs):
            if sh[SH_TYPE] == kind:
                return i
        return None

    def build_id(self) -> Optional[str]:
        """The GNU build id in the first ``SHT_NOTE`` section holding one."""
        for i in [i for i, sh in enumerate(self.shdrs) if sh[SH_TYPE] == SHT_NOTE]:
            data = self.section_data(i)
            pos = 0
            while pos + NHDR_SIZE < len(data):
                namesz, descsz, ntype = struct.unpack_from(self.order + "III", data, pos)
                pos += NHDR_SIZE
                name = data[pos:pos + namesz].split(b"\0", 1)[0]
                pos += _round4(namesz)
                if pos + descsz > len(data):
                    raise self.bad(f"note in section {i} runs past its end")
                desc = data[pos:pos + descsz]
                pos += _round4(descsz)
                if ntype == NT_GNU_BUILD_ID and name == NOTE_OWNER_GNU:
                    return desc.hex()
        return None


def _open(path: str) -> Tuple[int, _Elf]:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        return fd, _Elf(fd, path)
    except BaseException:
        os.close(fd)
        raise


class ElfSymbols:
    """The function symbols of one ELF file and its loadable segments."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.build_id: Optional[str] = None
        self.segments: List[Tuple[int, int, int]] = []   # (p_offset, p_filesz, p_vaddr)
        self.strtabs: List[bytes] = []
        # (start, size, (strtab index, name offset)) of every function symbol
        found: List[Tuple[int, int, Tuple[int, int]]] = []
        fd, elf = _open(path)
        try:
            self.build_id = elf.build_id()
            self.segments = [(ph[PH_OFFSET], ph[PH_FILESZ], ph[PH_VADDR])
                             for ph in elf.phdrs if ph[PH_TYPE] == PT_LOAD]
            tables = [elf.first_of_type(SHT_SYMTAB), elf.first_of_type(SHT_DYNSYM)]
            has_symtab = tables[0] is not None
            self._read(elf, [t for t in tables if t is not None], found)
        finally:
            os.close(fd)
        if not has_symtab and self.build_id:
            dbg = os.path.join(DEBUG_ROOT, self.build_id[:2], self.build_id[2:] + ".debug")
            if os.path.exists(dbg):
                fd, elf = _open(dbg)
                try:
                    sec = elf.first_of_type(SHT_SYMTAB)
                    if sec is not None:
                        self._read(elf, [sec], found)
                        self.debug_file = dbg
                finally:
                    os.close(fd)
        # one entry per start address, the first seen (.symtab and .dynsym
        # repeat each other)
        first: Dict[int, Tuple[int, Tuple[int, int]]] = {}
        for start, size, name in found:
            if start not in first:
                first[start] = (size, name)
        starts = sorted(first)
        self.table = SymbolTable(starts, [first[s][1] for s in starts],
                                 [first[s][0] for s in starts])

    def _read(self, elf: _Elf, secs: Sequence[int],
              found: List[Tuple[int, int, Tuple[int, int]]]) -> None:
        fmt = elf.order + _SYM64
        funcs = _FUNC_TYPES
        for sec in secs:
            link = elf.section(sec)[3]
            raw = elf.section_data(sec)
            raw = raw[:len(raw) - len(raw) % SYM64_SIZE]
            ti = len(self.strtabs)
            self.strtabs.append(elf.section_data(link))
            found.extend((value, size, (ti, name))
                         for name, info, _, shndx, value, size in struct.iter_unpack(fmt, raw)
                         if value and shndx != SHN_UNDEF and (info & _STT_MASK) in funcs)

    def __len__(self) -> int:
        return len(self.table)

    def name(self, i: int) -> str:
        """The name of symbol ``i`` of the table."""
        ti, off = self.table.names[i]
        tab = self.strtabs[ti]
        end = tab.find(b"\0", off)
        return tab[off:end if end >= 0 else None].decode("utf-8", "replace")

    def file_to_vaddr(self, offsets: Any) -> Any:
        """File offsets (as a mapping gives them) to the ELF's virtual addresses,
        through the PT_LOAD segment holding each; 0 where none does (a numpy
        array: see :meth:`vaddrs` for a list)."""
        import numpy as np
        off = np.asarray(offsets, dtype=np.uint64)
        out = np.zeros(len(off), dtype=np.uint64)
        for p_off, p_filesz, p_vaddr in self.segments:
            inside = (off >= np.uint64(p_off)) & (off < np.uint64(p_off + p_filesz))
            out = np.where(inside, off - np.uint64(p_off) + np.uint64(p_vaddr), out)
        return out

    def vaddrs(self, offsets: Sequence[int]) -> List[int]:
        """:meth:`file_to_vaddr` for a list of ints, one by one."""
        segs = self.segments
        out = []
        for o in offsets:
            v = 0
            for p_off, p_filesz, p_vaddr in segs:     # the last segment holding it, as above
                if p_off <= o < p_off + p_filesz:
                    v = o - p_off + p_vaddr
            out.append(v)
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
