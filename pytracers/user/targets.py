"""Which file a user-space target names: a path, a library name resolved as the
dynamic loader would, or the file a running process really mapped.

:func:`resolve_binary` is the one entry point; uprobes and USDT probes attach
to the absolute path it returns.  Inside a container (a process whose root or
mount namespace is not ours: its paths may name other files than ours, or
none) the path goes through ``/proc/PID/root``, so the kernel -- and this
library, reading the ELF -- find the same inode the process runs.
"""
from __future__ import annotations

import difflib
import os
import shutil
import struct
from typing import Dict, List, Optional, Tuple

from ..errors import BadArgumentError, TargetNotFoundError
from .procfs import process_stat

__all__ = ["resolve_binary", "loader_cache", "mapped_files", "process_root",
           "process_stat", "LIBRARY_DIRS"]

# Where the loader looks when ld.so.cache does not name a library (its trusted dirs).
LIBRARY_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
                "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
                "/lib64", "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib")

_CACHE_NEW = b"glibc-ld.so.cache1.1"
_CACHE_OLD = b"ld.so-1.7.0"
_NEW_HEADER = struct.Struct("<20sIIB3xI12x")     # magic+version, nlibs, len_strings, flags, ext
_NEW_ENTRY = struct.Struct("<iIIIQ")             # flags, key, value, osversion, hwcap
_OLD_ENTRY_SIZE = 12

_ELF_MACHINE_CACHE: Dict[str, Optional[Tuple[int, int]]] = {}


def _elf_machine(path: str) -> Optional[Tuple[int, int]]:
    """(EI_CLASS, e_machine) of an ELF file, None for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    endian = "<" if head[5] == 1 else ">"
    return head[4], struct.unpack_from(endian + "H", head, 18)[0]


def _our_machine() -> Optional[Tuple[int, int]]:
    if "self" not in _ELF_MACHINE_CACHE:
        _ELF_MACHINE_CACHE["self"] = _elf_machine("/proc/self/exe")
    return _ELF_MACHINE_CACHE["self"]


def _parse_cache(data: bytes) -> List[Tuple[str, str]]:
    """(soname, path) pairs of an ld.so.cache, in the cache's order (the loader's preference)."""
    base = 0
    if data.startswith(_CACHE_OLD):
        nlibs = struct.unpack_from("<I", data, len(_CACHE_OLD) + 1)[0]
        base = len(_CACHE_OLD) + 1 + 4 + nlibs * _OLD_ENTRY_SIZE
        base = (base + 7) & ~7
    if data[base:base + len(_CACHE_NEW)] != _CACHE_NEW:
        return []
    _magic, nlibs, _lstr, _flags, _ext = _NEW_HEADER.unpack_from(data, base)
    out = []
    off = base + _NEW_HEADER.size

    def cstr(at: int) -> str:
        end = data.find(b"\0", at)
        return data[at:end].decode("utf-8", "replace")

    for i in range(nlibs):
        _fl, key, value, _osv, _hw = _NEW_ENTRY.unpack_from(data, off + i * _NEW_ENTRY.size)
        # offsets count from the new header (the file's start in a new-only cache)
        out.append((cstr(base + key), cstr(base + value)))
    return out


_LOADER_CACHE: Dict[Tuple[str, float], List[Tuple[str, str]]] = {}


def loader_cache(root: str = "/") -> List[Tuple[str, str]]:
    """The (soname, path) pairs of ``root``'s ``/etc/ld.so.cache`` (empty if none),
    read once per file modification."""
    path = os.path.join(root, "etc/ld.so.cache")
    try:
        st = os.stat(path)
        key = (path, st.st_mtime)
        if key not in _LOADER_CACHE:
            with open(path, "rb") as f:
                _LOADER_CACHE[key] = _parse_cache(f.read())
        return _LOADER_CACHE[key]
    except (OSError, struct.error):
        return []


def process_root(pid: int) -> str:
    """``/proc/PID/root`` when the process sees other files than we do under
    the same paths -- another root directory (chroot, a container) or another
    mount namespace (``unshare -m``, a container: the same root inode with
    other mounts on it) -- else ``/``; TargetNotFoundError if there is no such
    process."""
    proc = f"/proc/{int(pid)}"
    if not os.path.isdir(proc):
        raise TargetNotFoundError("process", str(pid), detail="no such pid")
    root = proc + "/root"
    try:
        a, b = os.stat(root + "/"), os.stat("/")
    except OSError:
        return root
    if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
        return root
    try:
        same_ns = os.readlink(proc + "/ns/mnt") == os.readlink("/proc/self/ns/mnt")
    except OSError:
        same_ns = True      # not readable (a task mid-exec): its root is ours
    return "/" if same_ns else root


def _mappings(pid: int) -> List[Tuple[str, str, int]]:
    """(name, address range, inode) of each file process ``pid`` maps
    executable, first mapping of each, from ``/proc/PID/maps``."""
    try:
        with open(f"/proc/{int(pid)}/maps") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise TargetNotFoundError("process", str(pid), detail="no such pid") from None
    except ProcessLookupError:
        raise TargetNotFoundError("process", str(pid), detail="it has exited") from None
    out: List[Tuple[str, str, int]] = []
    seen = set()
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) < 6 or "x" not in parts[1] or not parts[5].startswith("/"):
            continue
        if parts[5] not in seen:
            seen.add(parts[5])
            try:
                inode = int(parts[4])
            except ValueError:
                inode = 0
            out.append((parts[5], parts[0], inode))
    return out


def mapped_files(pid: int, openable: bool = False) -> List[str]:
    """The files process ``pid`` has mapped executable, as its maps name them
    (a replaced file ends with `` (deleted)``).  The kernel writes those names
    from our root where it can reach the file, else from the root of the
    process's mount namespace -- usually the process's own view (a
    container's), not one we can open.

    ``openable=True``: as paths this process can open, checked against the
    mapping's inode -- through ``/proc/PID/root`` where the process's root or
    mount namespace differs from ours (:func:`process_root`), dropping leading
    components that name the namespace's root rather than the process's
    (a process chrooted inside its namespace), else the mapping itself
    (``/proc/PID/map_files/RANGE``); a replaced executable through
    ``/proc/PID/exe``, other replaced files left out."""
    maps = _mappings(pid)
    if not openable:
        return [name for name, _r, _i in maps]
    root = process_root(pid)
    paths: List[str] = []
    for name, rng, inode in maps:
        if name.endswith(" (deleted)"):
            exe = f"/proc/{int(pid)}/exe"
            try:
                if os.readlink(exe) == name:
                    paths.append(exe)
            except OSError:
                pass
            continue
        paths.append(_openable(pid, root, name, rng, inode))
    return paths


def _openable(pid: int, root: str, name: str, rng: str, inode: int) -> str:
    """A path we can open for the mapped file ``name`` (see mapped_files)."""
    first = _in_root(root, name)
    if root == "/" or not inode:
        return first
    parts = name.split("/")[1:]
    for i in range(len(parts)):
        cand = _in_root(root, "/" + "/".join(parts[i:]))
        try:
            if os.stat(cand).st_ino == inode:
                return cand
        except OSError:
            continue
    direct = f"/proc/{int(pid)}/map_files/{rng}"
    return direct if os.path.exists(direct) else first


def _lib_matches(name: str, base: str) -> int:
    """How well a file's base name matches a library name (0: not at all; higher is better)."""
    if base == name:
        return 4
    stem = name if name.startswith("lib") or ".so" in name else "lib" + name
    if base == stem + ".so":
        return 3
    if base.startswith(stem + ".so.") or (not stem.endswith(".so") and base.startswith(stem + "-")
                                           and ".so" in base):
        return 2
    return 0


def _in_root(root: str, path: str) -> str:
    return path if root == "/" else root + path


def _via_process(name: str, pid: int) -> Optional[str]:
    root = process_root(pid)
    maps = {m[0]: m for m in _mappings(pid)}
    best: Tuple[int, Optional[str]] = (0, None)
    for path in maps:
        clean = path[: -len(" (deleted)")] if path.endswith(" (deleted)") else path
        if "/" in name:
            score = 5 if clean == name else 0
        else:
            score = _lib_matches(name, os.path.basename(clean))
        if score > best[0]:
            best = (score, path)
    if best[1] is None:
        return None
    path = best[1]
    if path.endswith(" (deleted)"):
        # The file the process runs was replaced or removed on disk: its old
        # inode is still reachable through the process's exe/map_files links.
        exe = f"/proc/{int(pid)}/exe"
        try:
            if os.readlink(exe) == path:
                return exe
        except OSError:
            pass
        raise TargetNotFoundError(
            "binary", name, detail=f"process {pid} runs {path!r}, which was replaced or "
            "removed on disk; attach by the process's executable or restart it")
    _n, rng, inode = maps[path]
    return _openable(pid, root, path, rng, inode)


def _via_loader(name: str, root: str) -> Optional[str]:
    ours = _our_machine()
    ranked: List[Tuple[int, int, str]] = []
    for i, (soname, path) in enumerate(loader_cache(root)):
        score = _lib_matches(name, soname)
        if score:
            ranked.append((-score, i, path))
    for i, d in enumerate(LIBRARY_DIRS):
        try:
            entries = os.listdir(_in_root(root, d))
        except OSError:
            continue
        for base in entries:
            score = _lib_matches(name, base)
            if score:
                ranked.append((-score, 10_000 + i, os.path.join(d, base)))
    for _s, _i, path in sorted(ranked):
        full = _in_root(root, path)
        if os.path.isfile(full) and (ours is None or _elf_machine(full) == ours):
            return os.path.realpath(full) if root == "/" else full
    return None


def _suggestions(name: str, root: str, pid: Optional[int]) -> List[str]:
    names = [s for s, _p in loader_cache(root)]
    if pid is not None:
        try:
            names += [os.path.basename(p) for p in mapped_files(pid)]
        except TargetNotFoundError:
            pass
    return difflib.get_close_matches(name, sorted(set(names)), n=5, cutoff=0.6)


def _which_elf(name: str) -> Optional[str]:
    """The first ELF file called ``name`` on PATH (wrapper scripts, such as
    version managers' shims, are skipped: a uprobe needs the real binary)."""
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        exe = shutil.which(name, path=d or ".")
        if exe and _elf_machine(os.path.realpath(exe)) is not None:
            return os.path.realpath(exe)
    return None


def resolve_binary(target: str, pid: Optional[int] = None) -> str:
    """The absolute path of the executable or shared library ``target`` names.

    ``target`` is a path (``/usr/bin/python3.11``, ``./a.out``), a library name
    (``libc``, ``libc.so.6``, ``c``: resolved like the dynamic loader, from
    ``ld.so.cache`` and then the standard directories) or a command on
    ``PATH``.  With ``pid``, a name is first looked up among the files that
    process has mapped (so the library it really loaded), and paths are taken
    inside its root (``/proc/PID/root``: containers); a library the process
    has not loaded (yet) resolves like the loader would, in its root.
    Raises TargetNotFoundError, with close names as suggestions, when nothing
    matches, or for a pid that does not exist.
    """
    if not isinstance(target, str) or not target or "\0" in target:
        raise BadArgumentError(f"a binary must be a non-empty path or library name, "
                               f"got {target!r}")
    if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0):
        raise BadArgumentError(f"pid must be a positive int, got {pid!r}")
    root = process_root(pid) if pid is not None else "/"
    if target.startswith("/proc/") and os.path.isfile(target):
        return target       # already a path into a process (/proc/PID/root/..., /proc/PID/exe)
    if "/" in target:
        if pid is not None and os.path.isabs(target):
            found = _via_process(target, pid)
            if found:
                return found
            full = _in_root(root, target)
        else:
            full = os.path.abspath(target)
        if os.path.isfile(full):
            return os.path.realpath(full) if root == "/" else full
        raise TargetNotFoundError("binary", target, _suggestions(os.path.basename(target),
                                                                 root, pid),
                                  detail="no such file" + (f" in process {pid}'s root"
                                                           if root != "/" else ""))
    if pid is not None:
        found = _via_process(target, pid)
        if found:
            return found
    looks_like_library = target.startswith("lib") or ".so" in target
    if root == "/" and not looks_like_library:
        exe = _which_elf(target)        # a command: python3.11 before libpython3.11.so
        if exe:
            return exe
    found = _via_loader(target, root)
    if found:
        return found
    raise TargetNotFoundError(
        "binary", target, _suggestions(target, root, pid),
        detail="not a file, a library the loader knows (ld.so.cache, "
               f"{', '.join(LIBRARY_DIRS[:2])}) or a command on PATH")
