"""Inspect an object file with pyelftools before libbpf sees it.

libbpf is C: handed a truncated or hostile file it may print cryptic messages,
and pytracers wants every bad file to become a named exception.  This module
reads the file (refusing files others may change), has
:mod:`pytracers.elf.validate` check its structure, checks the things we can
check in Python -- is it ELF, is it eBPF, is it a CO-RE object (has
``.BTF``), does every program section have a name libbpf understands -- and
collects the facts the object model needs: its programs and the kind each
section denotes, and where each global variable of the data sections lives
(for read-only configuration).
"""
from __future__ import annotations

import io
import os
import stat
import struct
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

if TYPE_CHECKING:
    from . import validate

from ..errors import InsecureFileError, InvalidObjectError
from ..kinds import KINDS

EM_BPF = 247
SHF_EXECINSTR = 0x4

# Program section prefixes libbpf (>= 1.1) recognises: the probe kinds' (named
# in pytracers.kinds), then every other program type's.  A name equal to a
# prefix, or the prefix followed by "/..." (or "." for the dotted families),
# is a program section.
PROGRAM_SECTION_PREFIXES = tuple(s for k in KINDS.values() for s in k.sections) + (
    "socket", "sk_reuseport/migrate", "sk_reuseport", "uprobe.multi", "uretprobe.multi",
    "ksyscall", "kretsyscall",
    "tc", "tcx/ingress", "tcx/egress", "netkit/primary", "netkit/peer", "classifier", "action",
    "freplace", "lsm.s", "lsm_cgroup", "lsm", "iter.s", "iter", "syscall", "xdp.frags/devmap",
    "xdp/devmap", "xdp.frags/cpumap", "xdp/cpumap", "xdp.frags", "xdp", "lwt_in",
    "lwt_out", "lwt_xmit", "lwt_seg6local", "sockops", "sk_skb/stream_parser",
    "sk_skb/stream_verdict", "sk_skb/verdict", "sk_skb", "sk_msg", "lirc_mode2", "flow_dissector",
    "cgroup_skb/ingress", "cgroup_skb/egress", "cgroup/skb", "cgroup/sock_create",
    "cgroup/sock_release", "cgroup/sock", "cgroup/post_bind4", "cgroup/post_bind6",
    "cgroup/bind4", "cgroup/bind6", "cgroup/connect4", "cgroup/connect6", "cgroup/connect_unix",
    "cgroup/sendmsg4", "cgroup/sendmsg6", "cgroup/sendmsg_unix", "cgroup/recvmsg4",
    "cgroup/recvmsg6", "cgroup/recvmsg_unix", "cgroup/getpeername4", "cgroup/getpeername6",
    "cgroup/getpeername_unix", "cgroup/getsockname4", "cgroup/getsockname6",
    "cgroup/getsockname_unix", "cgroup/sysctl", "cgroup/getsockopt", "cgroup/setsockopt",
    "cgroup/dev", "struct_ops.s", "struct_ops", "sk_lookup", "netfilter",
)

# Non-program sections an eBPF object may carry.
DATA_SECTION_PREFIXES = (
    ".text", ".data", ".bss", ".rodata", ".maps", "maps", "license", "version", ".BTF",
    ".BTF.ext", ".rel", ".symtab", ".strtab", ".shstrtab", ".llvm_addrsig", ".debug",
    ".kconfig", ".ksyms", ".addrsig", ".note", ".comment", ".eh_frame", ".struct_ops",
    ".struct_ops.link", ".llvm.",
)


def is_program_section(name: str) -> bool:
    if name.startswith("?"):   # SEC("?...") : a program that starts with autoload off
        name = name[1:]
    for p in PROGRAM_SECTION_PREFIXES:
        if name == p or name.startswith(p + "/") or name.startswith(p + "+"):
            return True
    return False


# Plain classes, not dataclasses (whose import is costly at start-up): field-wise
# ``==`` (same class only, unhashable), a dataclass-style repr.

class Variable:
    """A global variable in a data section (.rodata, .data, .bss, ...)."""

    __match_args__ = ("name", "section", "offset", "size")
    __slots__ = __match_args__

    def __init__(self, name: str, section: str, offset: int, size: int) -> None:
        self.name = name
        self.section = section
        self.offset = offset
        self.size = size

    def __repr__(self) -> str:
        return (f"{type(self).__qualname__}(name={self.name!r}, section={self.section!r}, "
                f"offset={self.offset!r}, size={self.size!r})")

    def __eq__(self, other: Any) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool((self.name, self.section, self.offset, self.size)
                    == (other.name, other.section, other.offset, other.size))

    __hash__ = None     # type: ignore[assignment]  # mutable: unhashable


class ObjectInfo:
    """What :func:`inspect` found in an object (``None``: an empty dict/list)."""

    __match_args__ = ("path", "programs", "variables", "sections", "has_btf_ext", "btf")
    __slots__ = __match_args__

    def __init__(self, path: str, programs: Optional[Dict[str, str]] = None,
                 variables: Optional[Dict[str, Variable]] = None,
                 sections: Optional[List[str]] = None, has_btf_ext: bool = False,
                 btf: bytes = b"") -> None:
        self.path = path
        self.programs: Dict[str, str] = {} if programs is None else programs  # name -> section
        self.variables: Dict[str, Variable] = {} if variables is None else variables
        self.sections: List[str] = [] if sections is None else sections
        self.has_btf_ext = has_btf_ext
        self.btf = btf

    def copy(self, path: str) -> ObjectInfo:
        """A copy for ``path`` whose dicts and list can be changed independently."""
        return ObjectInfo(path, dict(self.programs), dict(self.variables), list(self.sections),
                          self.has_btf_ext, self.btf)

    def __repr__(self) -> str:
        return (f"{type(self).__qualname__}(path={self.path!r}, programs={self.programs!r}, "
                f"variables={self.variables!r}, sections={self.sections!r}, "
                f"has_btf_ext={self.has_btf_ext!r}, btf={self.btf!r})")

    def __eq__(self, other: Any) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool((self.path, self.programs, self.variables, self.sections,
                     self.has_btf_ext, self.btf)
                    == (other.path, other.programs, other.variables, other.sections,
                        other.has_btf_ext, other.btf))

    __hash__ = None     # type: ignore[assignment]  # mutable: unhashable


def _fail(path: str, problem: str, hint: str = "") -> InvalidObjectError:
    return InvalidObjectError(path, problem, hint)


def read_object_bytes(path: str, *, allow_insecure: bool = False) -> bytes:
    """Read ``path`` after the safety checks; errors name the problem.

    The file is opened once and everything -- its type, owner and mode, the
    directories it lives in, its contents -- is checked on that open file, so
    swapping the file (or a symlink to it) after the check cannot slip
    another file past it.
    """
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise _fail(path, "no such file",
                    "check the path; pytracers.objects_dir() lists the shipped objects") from None
    except PermissionError:
        raise _fail(path, "cannot read the file (permission denied)",
                    "check its permissions, or run as a user who can read it") from None
    except OSError as e:
        raise _fail(path, f"cannot open: {e.strerror}", "pass the path of a .bpf.o file") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise _fail(path, "is a directory", "pass the path of a .bpf.o file")
        if not stat.S_ISREG(st.st_mode):
            raise _fail(path, "is not a regular file", "pass the path of a .bpf.o file")
        if not allow_insecure:
            check_file_safety(path, fd=fd)
        chunks = []
        while True:
            try:
                chunk = os.read(fd, 1 << 20)
            except OSError as e:
                raise _fail(path, f"cannot read: {e.strerror}") from None
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _dirs_above(p: str) -> List[str]:
    out = []
    d = os.path.dirname(p)
    while True:
        out.append(d)
        if d == "/" or not d:
            return out
        d = os.path.dirname(d)


def check_file_safety(path: str, *, fd: Optional[int] = None) -> None:
    """As root, refuse files (and directories on their path) others can change.

    The rules: the file and every directory above it -- both on the path as
    given and where the file really is (after symlinks) -- must be owned by
    root (or the current user) and must not be writable by group or others,
    except a sticky directory such as /tmp, whose other users cannot replace
    our file.  With ``fd`` (the open file) the file itself is checked through
    the descriptor.  Only enforced when running as root (euid 0): an
    unprivileged process cannot load BPF programs that matter.
    """
    if os.geteuid() != 0:
        return
    me = os.geteuid()

    def check(st: os.stat_result, what: str, is_dir: bool) -> None:
        if st.st_uid not in (0, me):
            raise InsecureFileError(path, f"{what} is owned by uid {st.st_uid}")
        writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if writable and not (is_dir and st.st_mode & stat.S_ISVTX):
            who = "group" if st.st_mode & stat.S_IWGRP else "others"
            raise InsecureFileError(path, f"{what} is writable by {who} "
                                          f"(mode {stat.filemode(st.st_mode)})")

    if fd is not None:
        check(os.fstat(fd), "the file", False)
        real = os.readlink(f"/proc/self/fd/{fd}")
        if real.endswith(" (deleted)"):
            real = real[:-len(" (deleted)")]
    else:
        check(os.stat(path), "the file", False)
        real = os.path.realpath(path)
    seen = set()
    for d in _dirs_above(os.path.abspath(path)) + _dirs_above(real):
        if d in seen or not d:
            continue
        seen.add(d)
        check(os.stat(d), f"directory {d}", True)


# e_machine values worth naming in an error (anything else is shown as a number)
MACHINES = {0: "EM_NONE", 3: "EM_386", 8: "EM_MIPS", 20: "EM_PPC", 21: "EM_PPC64",
            22: "EM_S390", 40: "EM_ARM", 62: "EM_X86_64", 183: "EM_AARCH64", 243: "EM_RISCV",
            258: "EM_LOONGARCH"}


def inspect(path: str, data: bytes) -> ObjectInfo:
    """Check ``data`` (the contents of ``path``) and describe it.

    Two passes: :mod:`pytracers.elf.validate` first checks, with ``struct``,
    every index and extent that libelf/libbpf would follow (fuzzing showed
    libbpf 1.1 crashing on damaged files that a plain ELF reader accepts);
    then pyelftools reads the now-trusted file for what pytracers needs --
    section names and kinds, programs and global variables.  The result is
    cached by content, so opening the same object again costs a dict look-up.
    """
    # keyed by the bytes themselves: a hit means the very same content
    hit = _INFO_CACHE.get(data)
    if hit is not None:
        return hit.copy(path)
    info = _prevalidated(path, data) or _inspect(path, data)
    if len(_INFO_CACHE) >= 16:
        _INFO_CACHE.pop(next(iter(_INFO_CACHE)))
    _INFO_CACHE[data] = info
    return info.copy(info.path)


_INFO_CACHE: Dict[bytes, ObjectInfo] = {}


# ---- results of the checks above for the objects pytracers ships ---------------------
#
# ``python build.py`` runs _inspect() -- every check of this module and of
# validate.py, then the pyelftools read -- on each shipped object and writes
# the result to pytracers/elf/_inspected.py, keyed by the object's SHA-256 and
# stamped with a digest of the checking code (this file and validate.py).
# A file whose contents have that SHA-256 is byte for byte the file that
# passed those checks, so its result is reused instead of being recomputed
# (which costs importing pyelftools, ~40 ms, at every process start).  Any
# other file, and every file when the checking code has changed since the
# data was generated, goes through the full checks.  `build.py --check` and
# tests/test_inspected.py verify the data against a fresh full inspection.

_VALIDATOR_SOURCES = ("inspect.py", "validate.py")


def validator_digest() -> Optional[str]:
    """SHA-256 of the checking code (None when its source is not readable)."""
    h = _sha256()
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        for name in _VALIDATOR_SOURCES:
            with open(os.path.join(here, name), "rb") as f:
                h.update(name.encode() + b"\0" + f.read() + b"\0")
    except OSError:
        return None
    return str(h.hexdigest())


def _sha256(data: bytes = b"") -> Any:
    # the interpreter's built-in SHA-256: importing hashlib loads OpenSSL (~5 ms)
    for name in ("_sha256", "_sha2"):      # CPython <= 3.11, >= 3.12
        try:
            return __import__(name).sha256(data)
        except ImportError:
            pass
    import hashlib
    return hashlib.sha256(data)


_SHIPPED: Optional[Dict[str, Dict[str, Any]]] = None


def _shipped_records() -> Dict[str, Dict[str, Any]]:
    global _SHIPPED
    if _SHIPPED is None:
        records: Dict[str, Dict[str, Any]] = {}
        try:
            from . import _inspected
        except ImportError:
            pass
        else:
            if (getattr(_inspected, "FORMAT", None) == INSPECTED_FORMAT
                    and getattr(_inspected, "VALIDATOR_DIGEST", None) == validator_digest()):
                records = _inspected.OBJECTS
        _SHIPPED = records
    return _SHIPPED


INSPECTED_FORMAT = 1


def inspection_record(path: str, data: bytes) -> Dict[str, Any]:
    """The full inspection of ``data`` as plain data (what build.py stores)."""
    from . import validate
    info = _inspect(path, data)
    btf = next(s for s in validate.check_structure(path, data) if s.name == ".BTF")
    assert data[btf.offset:btf.offset + btf.size] == info.btf
    return {
        "programs": dict(info.programs),
        "variables": {n: (v.section, v.offset, v.size) for n, v in info.variables.items()},
        "sections": list(info.sections),
        "has_btf_ext": info.has_btf_ext,
        "btf": (btf.offset, btf.size),
    }


def _prevalidated(path: str, data: bytes) -> Optional[ObjectInfo]:
    """The stored full inspection of a shipped object, if ``data`` is one."""
    records = _shipped_records()
    rec = records.get(_sha256(data).hexdigest()) if records else None
    if rec is None:
        return None
    off, size = rec["btf"]
    return ObjectInfo(path=path, programs=dict(rec["programs"]),
                      variables={n: Variable(n, *v) for n, v in rec["variables"].items()},
                      sections=list(rec["sections"]), has_btf_ext=rec["has_btf_ext"],
                      btf=data[off:off + size])


def _inspect(path: str, data: bytes) -> ObjectInfo:
    from . import validate     # not imported for shipped objects (stored results)
    from elftools.common.exceptions import ELFError
    if not data:
        raise _fail(path, "is empty", "expected an eBPF object built with clang -target bpf")
    if not data.startswith(b"\x7fELF"):
        raise _fail(path, "is not an ELF file", "expected an eBPF object built with clang -target bpf")
    if len(data) < 64:
        raise _fail(path, f"is a damaged ELF file (only {len(data)} bytes, shorter than an "
                          "ELF header)", validate.REBUILD)
    if data[5] not in (1, 2) or data[4] not in (1, 2):
        raise _fail(path, f"is a damaged ELF file (invalid EI_CLASS {data[4]} or EI_DATA "
                          f"{data[5]})", validate.REBUILD)
    machine = int.from_bytes(data[18:20], "little" if data[5] == 1 else "big")
    if machine != EM_BPF:
        raise _fail(path, f"is an ELF file for {MACHINES.get(machine, machine)}, not eBPF "
                          "(EM_BPF)", "compile with clang -target bpf")
    if data[4] != 2 or data[5] != 1:
        raise _fail(path, "is a big-endian or 32-bit eBPF object; this machine needs "
                          "64-bit little-endian (-target bpfel)")
    try:
        # every index and extent libbpf follows, checked before it follows them
        sections = validate.check_structure(path, data)
        info = ObjectInfo(path=path)
        by_name: Dict[str, validate.Section] = {}
        for sec in sections:
            name = sec.name
            info.sections.append(name)
            by_name.setdefault(name, sec)
            if sec.flags & SHF_EXECINSTR and name != ".text":
                if not is_program_section(name):
                    raise _fail(path, f"has an unknown program section {name!r}",
                                "libbpf only loads programs in sections it knows, such as "
                                "SEC(\"tp/...\"), SEC(\"kprobe/...\"), SEC(\"fentry/...\")")
            elif name and sec.type == validate.SHT_PROGBITS:
                if not (name.startswith(DATA_SECTION_PREFIXES) or is_program_section(name)):
                    raise _fail(path, f"has an unknown section {name!r}",
                                "libbpf reads only .data*, .rodata*, .bss*, .maps, license "
                                "and program sections; rename or drop the section")
        btf = by_name.get(".BTF")
        if btf is None or btf.type != validate.SHT_PROGBITS:
            raise _fail(path, "has no .BTF section, so it is not a CO-RE object",
                        "compile with clang -g -O2 -target bpf so BTF is emitted")
        info.btf = data[btf.offset:btf.offset + btf.size]
        ntypes, str_len = validate.check_btf(path, info.btf)
        btf_ext = by_name.get(".BTF.ext")
        info.has_btf_ext = btf_ext is not None
        if btf_ext is not None:
            validate.check_btf_ext(path, data[btf_ext.offset:btf_ext.offset + btf_ext.size],
                                      ntypes, str_len)
        _collect_symbols(info, data)
        if not info.programs:
            raise _fail(path, "contains no BPF programs",
                        "mark each program with SEC(\"<kind>/<target>\"), e.g. SEC(\"tp/...\")")
        return info
    except InvalidObjectError:
        raise
    except (struct.error, ValueError, IndexError, KeyError, UnicodeDecodeError, ELFError) as e:
        raise _fail(path, f"is a damaged ELF file ({type(e).__name__}: {e})",
                    validate.REBUILD) from None


def _collect_symbols(info: ObjectInfo, data: bytes) -> None:
    """Programs (global functions outside .text) and data-section variables,
    read with pyelftools from a file validate.py has already checked."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection
    elf = ELFFile(io.BytesIO(data))
    names = [sec.name for sec in elf.iter_sections()]
    symtab = elf.get_section_by_name(".symtab")
    if not isinstance(symtab, SymbolTableSection):
        raise _fail(info.path, "has no symbol table", "do not strip eBPF objects with strip(1)")
    for sym in symtab.iter_symbols():
        shndx = sym["st_shndx"]
        if not isinstance(shndx, int) or not 0 < shndx < len(names):   # undefined, absolute
            continue
        sec = names[shndx]
        typ, bind = sym["st_info"]["type"], sym["st_info"]["bind"]
        if typ == "STT_FUNC" and bind == "STB_GLOBAL" and sec != ".text":
            info.programs[sym.name] = sec
        elif typ == "STT_OBJECT" and sec.startswith((".rodata", ".data", ".bss")):
            info.variables[sym.name] = Variable(sym.name, sec, sym["st_value"], sym["st_size"])


def section_target(section: str) -> Optional[str]:
    """The attach target written in the section name, if any ("tp/a/b" -> "a/b")."""
    parts = section.split("/", 1)
    return parts[1] if len(parts) == 2 and parts[1] else None


def split_tracepoint(target: str) -> Tuple[str, str]:
    if target.count("/") != 1 and target.count(":") != 1:
        raise ValueError(target)
    sep = "/" if "/" in target else ":"
    cat, name = target.split(sep)
    return cat, name
