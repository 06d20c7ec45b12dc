"""Strict structural checks of an eBPF object before libelf and libbpf parse it.

libbpf trusts much of what it reads: the libbpf 1.1 of Debian 12 follows
section, symbol, relocation and BTF type indices without checking them, and a
damaged file makes it read out of bounds (a segfault of the whole process, not
an error).  Fuzzing ``pytracers.open()`` found such files (see
RELIABILITY.md).  This module therefore checks, in pure Python, every index
and extent libbpf's open path follows, and accepts only the shapes clang and
bpftool produce:

- the ELF header (64-bit little-endian relocatable eBPF, no program headers,
  section headers inside the file, a string table for section names);
- every section header (known type and flags, extent inside the file, name and
  link indices in range, entry sizes of symbol and relocation tables, NUL-ended
  string tables, no duplicate names);
- the symbol table (name offsets, section indices, extents inside their
  section, BPF-instruction alignment of programs);
- the relocations libbpf applies (those of program, ``.maps`` and
  ``.struct_ops`` sections): symbol index, relocation type, offset inside the
  target section;
- ``.BTF`` (header, every type record's size, kind, name offset and the ids of
  the types it refers to) and ``.BTF.ext`` (header, record sizes and counts,
  string offsets and type ids of func_info, line_info and CO-RE records).

Each failure raises :class:`~pytracers.errors.InvalidObjectError` naming the
part that is wrong.  This is the first of the two passes of
:mod:`pytracers.elf`: :func:`pytracers.elf.inspect.inspect` runs it before
pyelftools reads the file.
"""
from __future__ import annotations

import struct
from typing import Dict, List, NamedTuple, Optional, Tuple

from ..errors import InvalidObjectError

__all__ = ["check_structure", "check_btf", "check_btf_ext", "symbols", "Section", "Symbol"]

REBUILD = "the file is damaged or was not produced by clang -target bpf; rebuild it"

EM_BPF = 247
ET_REL = 1
SHT_NULL, SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOTE, SHT_NOBITS, SHT_REL = 0, 1, 2, 3, 7, 8, 9
SHT_LLVM_ADDRSIG = 0x6FFF4C03
SECTION_TYPES = {SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOTE, SHT_NOBITS, SHT_REL,
                 SHT_LLVM_ADDRSIG}
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR, SHF_MERGE, SHF_STRINGS = 0x1, 0x2, 0x4, 0x10, 0x20
SHF_INFO_LINK, SHF_LINK_ORDER, SHF_COMPRESSED, SHF_EXCLUDE = 0x40, 0x80, 0x800, 0x80000000
KNOWN_FLAGS = (SHF_WRITE | SHF_ALLOC | SHF_EXECINSTR | SHF_MERGE | SHF_STRINGS | SHF_INFO_LINK
               | SHF_LINK_ORDER | SHF_EXCLUDE)
SHN_UNDEF, SHN_ABS = 0, 0xFFF1
SYM_SIZE, REL_SIZE, SHDR_SIZE, INSN_SIZE = 24, 16, 64, 8
# R_BPF_NONE, R_BPF_64_64, R_BPF_64_ABS64, R_BPF_64_ABS32, R_BPF_64_NODYLD32, R_BPF_64_32
RELOC_TYPES = {0, 1, 2, 3, 4, 10}
MAX_SECTIONS = 0xFF00  # no extended section numbering in eBPF objects

BTF_MAGIC = 0xEB9F
# BTF kinds -> (size of the data after the 12-byte common header, per-vlen size)
BTF_KINDS: Dict[int, Tuple[int, int]] = {
    1: (4, 0),     # INT
    2: (0, 0),     # PTR
    3: (12, 0),    # ARRAY
    4: (0, 12),    # STRUCT
    5: (0, 12),    # UNION
    6: (0, 8),     # ENUM
    7: (0, 0),     # FWD
    8: (0, 0),     # TYPEDEF
    9: (0, 0),     # VOLATILE
    10: (0, 0),    # CONST
    11: (0, 0),    # RESTRICT
    12: (0, 0),    # FUNC
    13: (0, 8),    # FUNC_PROTO
    14: (4, 0),    # VAR
    15: (0, 12),   # DATASEC
    16: (0, 0),    # FLOAT
    17: (4, 0),    # DECL_TAG
    18: (0, 0),    # TYPE_TAG
    19: (0, 12),   # ENUM64
}
# kinds whose `type` field is a type id (the others use it as a size)
BTF_REF_KINDS = {2, 8, 9, 10, 11, 12, 14, 17, 18}  # PTR TYPEDEF VOLATILE CONST RESTRICT FUNC VAR DECL_TAG TYPE_TAG
BTF_MAX_NAME_OFFSET = 0x7FFFFFFF


class Section(NamedTuple):
    idx: int
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    align: int
    entsize: int


def _bad(path: str, problem: str) -> InvalidObjectError:
    return InvalidObjectError(path, f"is a damaged eBPF object: {problem}", REBUILD)


def _cstr(data: bytes, start: int, end: int) -> Optional[str]:
    """The NUL-terminated string at ``start`` within ``data[:end]``, or None."""
    if start >= end:
        return None
    nul = data.find(b"\0", start, end)
    if nul < 0:
        return None
    return data[start:nul].decode("latin-1")


def check_structure(path: str, data: bytes) -> List[Section]:
    """Validate the ELF layout of ``data``; return its sections."""
    n = len(data)
    if n < 64:
        raise _bad(path, f"only {n} bytes, shorter than an ELF header (64)")
    ident = data[:16]
    if ident[4] != 2 or ident[5] != 1:
        raise InvalidObjectError(path, "is not a 64-bit little-endian ELF file",
                                 "compile with clang -target bpf (bpfel) on this machine")
    if ident[6] != 1:
        raise _bad(path, f"unknown ELF version {ident[6]} in e_ident")
    (e_type, e_machine, e_version, _entry, e_phoff, e_shoff, _flags, e_ehsize, _phentsize,
     e_phnum, e_shentsize, e_shnum, e_shstrndx) = struct.unpack_from("<HHIQQQIHHHHHH", data, 16)
    if e_machine != EM_BPF:
        raise InvalidObjectError(path, f"is an ELF file for machine {e_machine}, not eBPF "
                                 f"({EM_BPF})", "compile with clang -target bpf")
    if e_type != ET_REL:
        raise InvalidObjectError(path, f"is an ELF file of type {e_type}, not a relocatable "
                                 "object (ET_REL)", "pass the .o that clang -c produced, "
                                 "not a linked file")
    if e_version != 1 or e_ehsize != 64:
        raise _bad(path, f"ELF header has version {e_version} and size {e_ehsize}")
    if e_phnum != 0:
        raise _bad(path, f"a relocatable object with {e_phnum} program headers")
    if e_shentsize != SHDR_SIZE:
        raise _bad(path, f"section header size {e_shentsize}, expected {SHDR_SIZE}")
    if not 2 <= e_shnum < MAX_SECTIONS:
        raise _bad(path, f"{e_shnum} sections")
    if e_shoff < 64 or e_shoff % 8 or e_shoff + e_shnum * SHDR_SIZE > n:
        raise _bad(path, f"section header table ({e_shnum} entries at offset {e_shoff}) lies "
                         f"outside the {n}-byte file")
    if not 1 <= e_shstrndx < e_shnum:
        raise _bad(path, f"section-name table index {e_shstrndx} out of range")

    raw = [struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * SHDR_SIZE)
           for i in range(e_shnum)]
    if any(raw[0]):
        raise _bad(path, "section 0 is not the null section")
    st_name, st_type, _, _, st_off, st_size, *_ = raw[e_shstrndx]
    if st_type != SHT_STRTAB:
        raise _bad(path, f"section-name table (section {e_shstrndx}) is not a string table")
    if st_size == 0 or st_off + st_size > n:
        raise _bad(path, "section-name table lies outside the file")
    shstr_end = st_off + st_size
    if data[st_off] != 0 or data[shstr_end - 1] != 0:
        raise _bad(path, "section-name table is not NUL-delimited")

    sections: List[Section] = [Section(0, "", 0, 0, 0, 0, 0, 0, 0, 0)]
    names: Dict[str, int] = {}
    symtab: Optional[Section] = None
    for i in range(1, e_shnum):
        name_off, typ, flags, _addr, off, size, link, info, align, entsize = raw[i]
        name = _cstr(data, st_off + name_off, shstr_end) if name_off < st_size else None
        if name is None:
            raise _bad(path, f"section {i} has a name offset ({name_off}) outside the "
                             "section-name table")
        where = f"section {i} {name!r}"
        if typ not in SECTION_TYPES:
            raise _bad(path, f"{where} has unknown type {typ:#x}")
        if flags & SHF_COMPRESSED:
            raise InvalidObjectError(path, f"{where} is compressed",
                                     "libbpf cannot read compressed sections; rebuild "
                                     "without --compress-debug-sections")
        if flags & ~KNOWN_FLAGS:
            raise _bad(path, f"{where} has unknown flags {flags:#x}")
        if typ != SHT_NOBITS and off + size > n:
            raise _bad(path, f"{where} (offset {off}, {size} bytes) extends past the end "
                             f"of the {n}-byte file")
        if align and align & (align - 1):
            raise _bad(path, f"{where} has alignment {align}, not a power of two")
        if link >= e_shnum:
            raise _bad(path, f"{where} links to section {link}, which does not exist")
        if typ == SHT_SYMTAB:
            if symtab is not None:
                raise _bad(path, "more than one symbol table")
            if entsize != SYM_SIZE or size % SYM_SIZE or size < SYM_SIZE or off % 8:
                raise _bad(path, f"symbol table {where} has entry size {entsize}, size {size}"
                                 f" and offset {off}")
        elif typ == SHT_REL:
            if entsize != REL_SIZE or size % REL_SIZE or off % 8:
                raise _bad(path, f"relocation section {where} has entry size {entsize}, "
                                 f"size {size} and offset {off}")
            if not 1 <= info < e_shnum:
                raise _bad(path, f"relocation section {where} applies to section {info}, "
                                 "which does not exist")
        elif typ == SHT_STRTAB:
            if size == 0 or data[off] != 0 or data[off + size - 1] != 0:
                raise _bad(path, f"string table {where} is not NUL-delimited")
        elif entsize and not (flags & SHF_MERGE and entsize <= 64 and size % entsize == 0):
            raise _bad(path, f"{where} has entry size {entsize}")
        if name and typ != SHT_NULL:
            if name in names:
                raise _bad(path, f"two sections are named {name!r} ({names[name]} and {i})")
            names[name] = i
        sec = Section(i, name, typ, flags, off, size, link, info, align, entsize)
        sections.append(sec)
        if typ == SHT_SYMTAB:
            symtab = sec
    if symtab is None:
        raise InvalidObjectError(path, "has no symbol table",
                                 "do not strip eBPF objects with strip(1)")
    strtab = sections[symtab.link]
    if strtab.type != SHT_STRTAB:
        raise _bad(path, f"symbol table links to section {symtab.link}, not a string table")
    _check_symbols(path, data, sections, symtab, strtab)
    for sec in sections:
        if sec.type == SHT_REL:
            _check_relocations(path, data, sections, sec, symtab)
    return sections


def _check_symbols(path: str, data: bytes, sections: List[Section], symtab: Section,
                   strtab: Section) -> None:
    nsec = len(sections)
    if data[symtab.offset:symtab.offset + SYM_SIZE] != bytes(SYM_SIZE):
        raise _bad(path, "symbol 0 is not the null symbol")
    unpack = struct.Struct("<IBBHQQ").unpack_from
    for k in range(1, symtab.size // SYM_SIZE):
        name_off, info, _other, shndx, value, size = unpack(data, symtab.offset + k * SYM_SIZE)
        if name_off >= strtab.size:
            raise _bad(path, f"symbol {k} has a name offset ({name_off}) outside the string "
                             "table")
        typ, bind = info & 0xF, info >> 4
        if typ > 4 or bind > 2:   # NOTYPE OBJECT FUNC SECTION FILE; LOCAL GLOBAL WEAK
            raise _bad(path, f"symbol {k} has unknown type {typ} or binding {bind}")
        if shndx in (SHN_UNDEF, SHN_ABS):
            continue
        if shndx >= nsec:
            raise _bad(path, f"symbol {k} refers to section {shndx}, which does not exist")
        sec = sections[shndx]
        if sec.type not in (SHT_PROGBITS, SHT_NOBITS):
            raise _bad(path, f"symbol {k} refers to section {shndx} {sec.name!r} of type "
                             f"{sec.type}, which holds no code or data")
        if value + size > sec.size:
            raise _bad(path, f"symbol {k} (offset {value}, {size} bytes) extends past the end "
                             f"of section {sec.name!r} ({sec.size} bytes)")
        if typ == 2 and sec.flags & SHF_EXECINSTR and (value % INSN_SIZE or size % INSN_SIZE):
            raise _bad(path, f"function symbol {k} in {sec.name!r} is not a whole number of "
                             "BPF instructions")


class Symbol(NamedTuple):
    name: str
    type: int      # STT_*
    bind: int      # STB_*
    shndx: int
    value: int
    size: int


def symbols(data: bytes, sections: List[Section]) -> List[Symbol]:
    """The symbols of a file that passed :func:`check_structure`."""
    symtab = next(s for s in sections if s.type == SHT_SYMTAB)
    strtab = sections[symtab.link]
    end = strtab.offset + strtab.size
    unpack = struct.Struct("<IBBHQQ").unpack_from
    out = []
    for k in range(1, symtab.size // SYM_SIZE):
        name_off, info, _other, shndx, value, size = unpack(data, symtab.offset + k * SYM_SIZE)
        name = _cstr(data, strtab.offset + name_off, end) or ""
        out.append(Symbol(name, info & 0xF, info >> 4, shndx, value, size))
    return out


def _applied_by_libbpf(target: Section) -> bool:
    return bool(target.flags & SHF_EXECINSTR) or target.name == ".maps" or \
        target.name.startswith(".struct_ops")


def _check_relocations(path: str, data: bytes, sections: List[Section], rel: Section,
                       symtab: Section) -> None:
    if rel.link != symtab.idx:
        raise _bad(path, f"relocation section {rel.name!r} does not use the symbol table")
    target = sections[rel.info]
    if not _applied_by_libbpf(target):
        return   # DWARF, .BTF, .BTF.ext relocations: libbpf skips them
    if target.type != SHT_PROGBITS:
        raise _bad(path, f"relocation section {rel.name!r} applies to {target.name!r}, "
                         "which has no contents")
    nsyms = symtab.size // SYM_SIZE
    unpack = struct.Struct("<QII").unpack_from
    for k in range(rel.size // REL_SIZE):
        r_offset, r_type, r_sym = unpack(data, rel.offset + k * REL_SIZE)
        if not 1 <= r_sym < nsyms:
            raise _bad(path, f"relocation {k} of {rel.name!r} uses symbol {r_sym}, which does "
                             "not exist")
        if r_type not in RELOC_TYPES:
            raise _bad(path, f"relocation {k} of {rel.name!r} has unknown type {r_type}")
        if r_offset % INSN_SIZE or r_offset + INSN_SIZE > target.size:
            raise _bad(path, f"relocation {k} of {rel.name!r} points at offset {r_offset}, "
                             f"outside section {target.name!r} ({target.size} bytes)")


# ---- BTF --------------------------------------------------------------------------
def check_btf(path: str, btf: bytes) -> Tuple[int, int]:
    """Validate ``.BTF``; return (number of types incl. void, string section size)."""
    n = len(btf)
    if n < 24:
        raise _bad(path, f".BTF has only {n} bytes")
    magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
        "<HBBIIIII", btf, 0)
    if magic != BTF_MAGIC:
        raise _bad(path, f".BTF has magic {magic:#x}, not {BTF_MAGIC:#x} (or is big-endian)")
    if version != 1 or flags != 0:
        raise _bad(path, f".BTF version {version} flags {flags}")
    if not 24 <= hdr_len <= n or hdr_len % 4:
        raise _bad(path, f".BTF header length {hdr_len}")
    body = n - hdr_len
    if type_off % 4 or type_len % 4 or type_off + type_len > str_off or str_off + str_len > body:
        raise _bad(path, f".BTF sections (types {type_off}+{type_len}, strings "
                         f"{str_off}+{str_len}) do not fit its {body} bytes")
    s0 = hdr_len + str_off
    if str_len == 0 or str_len > BTF_MAX_NAME_OFFSET or btf[s0] != 0 or btf[s0 + str_len - 1] != 0:
        raise _bad(path, ".BTF string section is empty or not NUL-delimited")
    words = struct.unpack_from(f"<{type_len // 4}I", btf, hdr_len + type_off)
    # pass 1: record boundaries
    starts: List[int] = []
    i = 0
    nw = len(words)
    while i < nw:
        if i + 3 > nw:
            raise _bad(path, f".BTF type {len(starts) + 1} is cut short")
        info = words[i + 1]
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        shape = BTF_KINDS.get(kind)
        if shape is None:
            raise _bad(path, f".BTF type {len(starts) + 1} has unknown kind {kind}")
        if info & 0x60FF0000:
            raise _bad(path, f".BTF type {len(starts) + 1} has reserved info bits set "
                             f"({info:#x})")
        size = 3 + (shape[0] + vlen * shape[1]) // 4
        if i + size > nw:
            raise _bad(path, f".BTF type {len(starts) + 1} is cut short")
        starts.append(i)
        i += size
    ntypes = len(starts) + 1   # id 0 is void

    def name_ok(off: int) -> bool:
        return off < str_len and btf.find(b"\0", s0 + off, s0 + str_len) >= 0

    def type_ok(tid: int, zero_ok: bool = True) -> bool:
        return tid < ntypes and (zero_ok or tid != 0)

    kinds = [0] + [(words[s + 1] >> 24) & 0x1F for s in starts]
    for tid, s in enumerate(starts, 1):
        name_off, info, size_or_type = words[s], words[s + 1], words[s + 2]
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        where = f".BTF type {tid}"
        if not name_ok(name_off):
            raise _bad(path, f"{where} has a name offset ({name_off}) outside the strings")
        if kind in BTF_REF_KINDS and not type_ok(size_or_type):
            raise _bad(path, f"{where} refers to type {size_or_type}, which does not exist "
                             f"(there are {ntypes - 1})")
        if kind == 12 and kinds[size_or_type] != 13:
            raise _bad(path, f"{where} is a function whose type is not a function prototype")
        rest = s + 3
        if kind == 3:  # ARRAY: type, index_type, nelems
            if not (type_ok(words[rest]) and type_ok(words[rest + 1])):
                raise _bad(path, f"{where} (array) refers to a type that does not exist")
        elif kind in (4, 5):  # STRUCT/UNION members: name_off, type, offset
            for m in range(vlen):
                mn, mt = words[rest + 3 * m], words[rest + 3 * m + 1]
                if not name_ok(mn) or not type_ok(mt):
                    raise _bad(path, f"{where} member {m} has a bad name offset or type id")
        elif kind == 6:  # ENUM values: name_off, val
            for m in range(vlen):
                if not name_ok(words[rest + 2 * m]):
                    raise _bad(path, f"{where} value {m} has a bad name offset")
        elif kind == 19:  # ENUM64: name_off, lo, hi
            for m in range(vlen):
                if not name_ok(words[rest + 3 * m]):
                    raise _bad(path, f"{where} value {m} has a bad name offset")
        elif kind == 13:  # FUNC_PROTO: ret in `type`; params: name_off, type
            if not type_ok(size_or_type):
                raise _bad(path, f"{where} returns type {size_or_type}, which does not exist")
            for m in range(vlen):
                pn, pt = words[rest + 2 * m], words[rest + 2 * m + 1]
                if not name_ok(pn) or not type_ok(pt):
                    raise _bad(path, f"{where} parameter {m} has a bad name offset or type id")
        elif kind == 15:  # DATASEC vars: type, offset, size
            for m in range(vlen):
                vt, voff, vsz = words[rest + 3 * m:rest + 3 * m + 3]
                if not type_ok(vt, zero_ok=False) or kinds[vt] not in (14, 12):
                    raise _bad(path, f"{where} (section) entry {m} is not a variable")
                # clang leaves a section's size 0 (libbpf fills it in from the ELF section)
                if size_or_type and voff + vsz > size_or_type:
                    raise _bad(path, f"{where} (section) entry {m} lies outside the section")
        elif kind == 17:  # DECL_TAG: component_idx
            if not type_ok(size_or_type, zero_ok=False):
                raise _bad(path, f"{where} tags a type that does not exist")
    return ntypes, str_len


def check_btf_ext(path: str, ext: bytes, ntypes: int, btf_str_len: int) -> None:
    """Validate ``.BTF.ext`` against the object's BTF (type count, string size)."""
    n = len(ext)
    if n < 8:
        raise _bad(path, f".BTF.ext has only {n} bytes")
    magic, version, flags, hdr_len = struct.unpack_from("<HBBI", ext, 0)
    if magic != BTF_MAGIC or version != 1 or flags != 0:
        raise _bad(path, f".BTF.ext magic {magic:#x} version {version} flags {flags}")
    if hdr_len < 24 or hdr_len > n or hdr_len % 4:
        raise _bad(path, f".BTF.ext header length {hdr_len}")
    fields = struct.unpack_from("<6I", ext, 8) if hdr_len >= 32 else \
        struct.unpack_from("<4I", ext, 8) + (0, 0)
    # (what, per-record: list of (word index, "str"|"type"), min record size)
    parts = (("func_info", fields[0], fields[1], ((1, "type"),), 8),
             ("line_info", fields[2], fields[3], ((1, "str"), (2, "str")), 16),
             ("CO-RE relocation", fields[4], fields[5], ((1, "type"), (2, "str")), 16))
    body = n - hdr_len
    for what, off, length, checks, min_rec in parts:
        if length == 0:
            continue
        if off % 4 or length % 4 or off + length > body or length < 4:
            raise _bad(path, f".BTF.ext {what} ({off}+{length}) does not fit its {body} bytes")
        start = hdr_len + off
        words = struct.unpack_from(f"<{length // 4}I", ext, start)
        rec_size = words[0]
        if rec_size < min_rec or rec_size % 4:
            raise _bad(path, f".BTF.ext {what} record size {rec_size}")
        rw = rec_size // 4
        i = 1
        if i >= len(words):
            raise _bad(path, f".BTF.ext {what} has no records")
        while i < len(words):
            if i + 2 > len(words):
                raise _bad(path, f".BTF.ext {what} section header is cut short")
            sec_name_off, count = words[i], words[i + 1]
            if sec_name_off >= btf_str_len:
                raise _bad(path, f".BTF.ext {what} names a section at string offset "
                                 f"{sec_name_off}, outside .BTF's strings")
            if count == 0 or i + 2 + count * rw > len(words):
                raise _bad(path, f".BTF.ext {what} has a bad record count {count}")
            i += 2
            for _ in range(count):
                for w, how in checks:
                    v = words[i + w]
                    if how == "type" and v >= ntypes:
                        raise _bad(path, f".BTF.ext {what} refers to type {v}, which does "
                                         "not exist")
                    if how == "str" and v >= btf_str_len:
                        raise _bad(path, f".BTF.ext {what} has a string offset {v} outside "
                                         ".BTF's strings")
                if what == "CO-RE relocation" and words[i + 3] > 15:
                    raise _bad(path, f".BTF.ext CO-RE relocation of unknown kind {words[i + 3]}")
                i += rw
