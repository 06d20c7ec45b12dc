"""ELF symbol tables of user-space binaries: where a function is, as a uprobe
needs it (a file offset), read with pyelftools once per file.

A :class:`SymbolTable` holds ``.symtab`` (when the binary is not stripped, or
its separate debug file under ``/usr/lib/debug/.build-id`` is installed) and
``.dynsym`` with GNU symbol versions (``malloc@@GLIBC_2.2.5`` is the default
version, ``memcpy@GLIBC_2.2.5`` an old one).  A symbol's value is turned into a
file offset through the executable ``PT_LOAD`` segment that holds it, which is
right for PIE and non-PIE executables, shared libraries and prelinked ones
alike.  Tables are cached per file (path, inode, mtime) and per build-id, so
looking a name up afterwards is a dict access (:meth:`SymbolTable.get`).
"""
from __future__ import annotations

import fnmatch
import os
import struct
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Set, Tuple, Union

from ..errors import BadArgumentError, PytracersError, TargetNotFoundError

__all__ = ["Symbol", "SymbolTable", "symbol_table", "resolve_symbol", "clear_cache",
           "ElfReadError"]

STT_FUNC = 2
STT_GNU_IFUNC = 10
STB_LOCAL = 0
SHN_UNDEF = 0
_VERSYM_HIDDEN = 0x8000
_VERSYM_INDEX = 0x7FFF
_FUNC_TYPES = (STT_FUNC, STT_GNU_IFUNC)
_DEBUG_ROOT = "/usr/lib/debug"


class ElfReadError(PytracersError, ValueError):
    """A user-space target is not an ELF file pytracers can read."""


class Symbol(NamedTuple):
    """One function symbol of a binary."""

    name: str
    """Its name without version."""
    version: Optional[str]
    """Its GNU symbol version (``GLIBC_2.2.5``), None if unversioned."""
    default: bool
    """True for the default version (``name@@version``) or an unversioned symbol."""
    address: int
    """``st_value``: its address in the binary's own address space."""
    size: int
    offset: int
    """Its file offset: what a uprobe attaches to."""
    ifunc: bool
    """An indirect function: the address is its resolver's, not the implementation's."""
    local: bool
    """A file-local (static) symbol; only ``.symtab`` has those."""
    table: str
    """``.symtab``, ``.dynsym`` or ``debug file`` (the .symtab of :attr:`SymbolTable.debug_file`)."""

    @property
    def versioned_name(self) -> str:
        if not self.version:
            return self.name
        return f"{self.name}{'@@' if self.default else '@'}{self.version}"


def _read_build_id(elf) -> Optional[str]:
    sec = elf.get_section_by_name(".note.gnu.build-id")
    if sec is None:
        return None
    for note in sec.iter_notes():
        if note["n_type"] == "NT_GNU_BUILD_ID":
            return str(note["n_desc"])
    return None


def _version_names(elf) -> Dict[int, str]:
    names: Dict[int, str] = {}
    vd = elf.get_section_by_name(".gnu.version_d")
    if vd is not None:
        for verdef, aux in vd.iter_versions():
            first = next(iter(aux), None)
            if first is not None and not verdef["vd_flags"] & 1:  # VER_FLG_BASE: the file
                names[verdef["vd_ndx"]] = first.name
    vn = elf.get_section_by_name(".gnu.version_r")
    if vn is not None:
        for _verneed, aux in vn.iter_versions():
            for a in aux:
                names[a["vna_other"]] = a.name
    return names


class SymbolTable:
    """The function symbols of one ELF file, by name."""

    def __init__(self, path: str) -> None:
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile

        self.path = path
        self.functions: Dict[str, List[Symbol]] = {}
        self._resolved: Dict[str, Symbol] = {}
        self.imports: Set[str] = set()
        """Functions the binary calls but its libraries define (undefined in .dynsym)."""
        self.has_symtab = False
        self.debug_file: Optional[str] = None
        try:
            with open(path, "rb") as f:
                elf = ELFFile(f)
                self.pie = elf["e_type"] == "ET_DYN"
                self.build_id = _read_build_id(elf)
                self._segments = [(s["p_vaddr"], s["p_memsz"], s["p_offset"])
                                  for s in elf.iter_segments()
                                  if s["p_type"] == "PT_LOAD" and s["p_flags"] & 1]
                dyn: Any = elf.get_section_by_name(".dynamic")
                self.needed = [t.needed for t in (dyn.iter_tags() if dyn is not None else ())
                               if t.entry.d_tag == "DT_NEEDED"]
                self._read(elf, ".dynsym", ".dynsym")
                if elf.get_section_by_name(".symtab") is not None:
                    self.has_symtab = True
                    self._read(elf, ".symtab", ".symtab")
        except FileNotFoundError:
            raise TargetNotFoundError("binary", path, detail="no such file") from None
        except IsADirectoryError:
            raise ElfReadError(f"{path}: is a directory, not an executable or library") from None
        except PermissionError as e:
            raise ElfReadError(f"{path}: cannot read it ({e.strerror})") from None
        except (ELFError, struct.error, ValueError) as e:
            raise ElfReadError(f"{path}: not an ELF executable or library ({e})") from None
        if not self.has_symtab and self.build_id:
            dbg = os.path.join(_DEBUG_ROOT, ".build-id", self.build_id[:2],
                               self.build_id[2:] + ".debug")
            if os.path.isfile(dbg):
                try:
                    with open(dbg, "rb") as f:
                        self._read(ELFFile(f), ".symtab", "debug file")
                    self.debug_file = dbg
                    self.has_symtab = True
                except (OSError, ELFError, struct.error, ValueError):
                    pass
        self.sizes = sum(len(v) for v in self.functions.values())

    def _read(self, elf, section: str, label: str) -> None:
        sec = elf.get_section_by_name(section)
        if sec is None or sec["sh_entsize"] == 0:
            return
        strtab = elf.get_section(sec["sh_link"]).data()
        data = sec.data()
        e = "<" if elf.little_endian else ">"
        if elf.elfclass == 64:
            rows = ((n, i, sh, v, sz) for n, i, _o, sh, v, sz in
                    struct.iter_unpack(e + "IBBHQQ", data[: len(data) // 24 * 24]))
        else:
            rows = ((n, i, sh, v, sz) for n, v, sz, i, _o, sh in
                    struct.iter_unpack(e + "IIIBBH", data[: len(data) // 16 * 16]))
        versym: Optional[Tuple[int, ...]] = None
        vnames: Dict[int, str] = {}
        if section == ".dynsym":
            vs = elf.get_section_by_name(".gnu.version")
            if vs is not None:
                raw = vs.data()
                versym = struct.unpack(e + f"{len(raw) // 2}H", raw[: len(raw) // 2 * 2])
                vnames = _version_names(elf)
        for idx, (name_off, info, shndx, value, size) in enumerate(rows):
            typ = info & 0xF
            if shndx == SHN_UNDEF and section == ".dynsym" and typ in (0, STT_FUNC) and name_off:
                end = strtab.find(b"\0", name_off)
                self.imports.add(strtab[name_off:end].decode("utf-8", "replace"))
                continue
            if typ not in _FUNC_TYPES or shndx == SHN_UNDEF or not value:
                continue
            end = strtab.find(b"\0", name_off)
            name = strtab[name_off:end].decode("utf-8", "replace")
            if not name:
                continue
            version, default = None, True
            if "@" in name:      # .symtab spells versions in the name: f@@V (default), f@V
                name, _at, ver = name.partition("@")
                default = ver.startswith("@")
                version = ver.lstrip("@") or None
            elif versym is not None and idx < len(versym):
                v = versym[idx]
                version = vnames.get(v & _VERSYM_INDEX)
                default = not v & _VERSYM_HIDDEN
            offset = self.offset_of(value)
            if offset is None:
                continue
            sym = Symbol(name, version, default, value, size, offset, typ == STT_GNU_IFUNC,
                         info >> 4 == STB_LOCAL, label)
            same = self.functions.setdefault(name, [])
            for i, old in enumerate(same):
                if old.address == value:      # the same function in both tables
                    if old.version is None and version is not None:
                        same[i] = sym
                    break
            else:
                same.append(sym)

    def offset_of(self, address: int) -> Optional[int]:
        """The file offset of ``address`` (a symbol's value), None outside executable code."""
        for vaddr, memsz, off in self._segments:
            if vaddr <= address < vaddr + memsz:
                return address - vaddr + off
        return None

    # ---- look-ups ------------------------------------------------------------
    def get(self, name: str) -> Optional[List[Symbol]]:
        """Every function called ``name`` (one dict access), None if none."""
        return self.functions.get(name)

    def lookup(self, name: str) -> Symbol:
        """The one function ``name`` names: ``malloc``, ``malloc@@GLIBC_2.2.5``,
        ``memcpy@GLIBC_2.2.5``.  Several definitions: the default version, else a
        global one, else BadArgumentError listing them; none:
        TargetNotFoundError (saying what a stripped binary lacks)."""
        sym = self._resolved.get(name)
        if sym is not None:           # the same name again: one dict access
            return sym
        sym = self._lookup(name)
        self._resolved[name] = sym
        return sym

    def _lookup(self, name: str) -> Symbol:
        base, at, version = name.partition("@")
        cands = self.functions.get(base)
        if cands and at:
            version = version.lstrip("@")
            want_default = name.count("@") == 2
            cands = [s for s in cands if s.version == version
                     and (s.default or not want_default)]
        if not cands:
            raise self._not_found(name)
        if len(cands) > 1:
            best = [s for s in cands if s.default and not s.local] or \
                   [s for s in cands if not s.local]
            if len(best) != 1:
                listed = ", ".join(f"{s.versioned_name} at {s.address:#x}"
                                   f"{' (static)' if s.local else ''}" for s in cands)
                raise BadArgumentError(
                    f"{self.path}: {len(cands)} functions are called {name!r} ({listed}); "
                    "attach by offset (symbol_or_offset=0x...) or by a versioned name")
            cands = best
        sym = cands[0]
        if sym.ifunc:
            impls = [s.name for s in self.find(f"*{base}*")
                     if not s.ifunc and s.name != base][:8]
            raise BadArgumentError(
                f"{self.path}: {name!r} is an indirect function (IFUNC): its symbol is the "
                "resolver the loader runs once, not the code that is called"
                + (f"; trace an implementation instead: {', '.join(impls)}" if impls else ""))
        return sym

    def _not_found(self, name: str) -> TargetNotFoundError:
        import difflib
        suggestions = difflib.get_close_matches(name.partition("@")[0], list(self.functions),
                                                n=5, cutoff=0.7)
        detail = ""
        base = name.partition("@")[0]
        if base in self.imports:
            homes = self.defined_in_libraries(base)
            where = (f"it is defined in {', '.join(homes)}" if homes else
                     f"its libraries are {', '.join(self.needed) or 'unknown'}")
            return TargetNotFoundError(
                "function", name, detail=f"{self.path} imports it, it does not define "
                f"it: {where}; trace it in the library (with pid=, the copy that process "
                "loaded)")
        if not self.has_symtab:
            debug = (f"/usr/lib/debug/.build-id/{self.build_id[:2]}/{self.build_id[2:]}.debug"
                     if self.build_id else "a debug file")
            detail = (f"the binary is stripped: no .symtab, only its "
                      f"{len(self.functions)} exported functions (.dynsym) are known; "
                      f"{debug} (its debug symbols), an offset (symbol_or_offset=0x...) "
                      "or a USDT probe in the binary would help")
        return TargetNotFoundError("function", name, suggestions,
                                   detail=f"in {self.path}" + (f"; {detail}" if detail else ""))

    def defined_in_libraries(self, name: str) -> List[str]:
        """The libraries this binary needs (DT_NEEDED, resolved like the loader)
        that define function ``name``: where a call of an imported function goes."""
        from .targets import resolve_binary
        out = []
        for lib in self.needed:
            try:
                path = resolve_binary(lib)
                if symbol_table(path).get(name):
                    out.append(path)
            except PytracersError:
                continue
        return out

    def find(self, pattern: str = "*") -> List[Symbol]:
        """Functions whose name matches the glob, sorted by name."""
        if not any(c in pattern for c in "*?["):
            return sorted(self.functions.get(pattern, []), key=lambda s: s.address)
        names = fnmatch.filter(self.functions, pattern)
        return [s for n in sorted(names) for s in sorted(self.functions[n],
                                                         key=lambda s: s.address)]

    def __iter__(self) -> Iterator[Symbol]:
        return (s for v in self.functions.values() for s in v)

    def __len__(self) -> int:
        return self.sizes

    def __repr__(self) -> str:
        return (f"<SymbolTable {self.path} {self.sizes} functions"
                f"{'' if self.has_symtab else ' (stripped)'}>")


_BY_FILE: Dict[Tuple[str, int, int, int, int], SymbolTable] = {}
_BY_BUILD_ID: Dict[str, SymbolTable] = {}


def clear_cache() -> None:
    _BY_FILE.clear()
    _BY_BUILD_ID.clear()


def symbol_table(path: str) -> SymbolTable:
    """The :class:`SymbolTable` of the file at ``path``, read once per file
    version (path, inode, mtime) and shared between files of one build-id."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise TargetNotFoundError("binary", path, detail="no such file") from None
    except OSError as e:
        raise ElfReadError(f"{path}: cannot read it ({e.strerror})") from None
    key = (path, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    table = _BY_FILE.get(key)
    if table is None:
        table = SymbolTable(path)
        if table.build_id and table.build_id in _BY_BUILD_ID:
            shared = _BY_BUILD_ID[table.build_id]
            if shared.has_symtab >= table.has_symtab:
                table = shared
        elif table.build_id:
            _BY_BUILD_ID[table.build_id] = table
        _BY_FILE[key] = table
    return table


def resolve_symbol(path: str, symbol_or_offset: Union[str, int]) -> Tuple[int, str]:
    """(file offset, description) of a function of the binary at ``path``, or of
    a file offset given as an int (checked to fall inside its code)."""
    if isinstance(symbol_or_offset, bool):
        raise BadArgumentError("a symbol must be a name or an int file offset")
    if isinstance(symbol_or_offset, int):
        if symbol_or_offset < 0:
            raise BadArgumentError(f"a file offset must be >= 0, got {symbol_or_offset}")
        table = symbol_table(path)
        if not any(off <= symbol_or_offset < off + memsz for _v, memsz, off in table._segments):
            raise BadArgumentError(f"{path}: offset {symbol_or_offset:#x} is outside its "
                                   "executable segments")
        return symbol_or_offset, f"{path}+{symbol_or_offset:#x}"
    if not isinstance(symbol_or_offset, str) or not symbol_or_offset:
        raise BadArgumentError(f"a symbol must be a non-empty name or an int file offset, "
                               f"got {symbol_or_offset!r}")
    sym = symbol_table(path).lookup(symbol_or_offset)
    return sym.offset, f"{path}:{sym.versioned_name}"
