"""Find the executable or shared library a user-space probe attaches to.

``resolve_binary("/usr/bin/python3.11")`` (a path), ``resolve_binary("libc")``
or ``resolve_binary("python3.11")`` (a name, looked up as the dynamic loader
and the shell would: the standard library directories, then ``PATH``), or
``resolve_binary("libc", pid=1234)`` (the library that process really mapped,
read from ``/proc/PID/maps`` and reached through ``/proc/PID/root``, so a
process in a container gets its own copy).
"""
from __future__ import annotations

import errno as _errno
import glob
import os
import re
from typing import List, Optional

from ..errors import BadArgumentError, BadTypeError, TargetNotFoundError

__all__ = ["resolve_binary", "mapped_files", "LIBRARY_DIRS"]

LIBRARY_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
                "/lib", "/usr/lib", "/usr/local/lib")
"""Where a library name is looked for (ld.so's default search path on Debian x86-64)."""

_ELF_MAGIC = b"\x7fELF"


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == _ELF_MAGIC
    except OSError:
        return False


def _name_matches(name: str, filename: str) -> bool:
    """``libc`` matches libc.so.6 and libc-2.31.so; ``python3.11`` matches
    python3.11 and libpython3.11.so.1.0; a full file name matches itself."""
    if filename == name:
        return True
    for stem in (name, "lib" + name if not name.startswith("lib") else name):
        if re.fullmatch(re.escape(stem) + r"(\.so(\.[0-9.]+)?|-[0-9.]+\.so)", filename):
            return True
    return False


def mapped_files(pid: int) -> List[str]:
    """The files process ``pid`` has mapped executable, in map order, as paths
    this process can open (through ``/proc/PID/root``)."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise TargetNotFoundError("process", str(pid), detail="no such process") from None
    except PermissionError as e:
        from ..errors import PermissionDeniedError
        raise PermissionDeniedError(f"read /proc/{pid}/maps", "CAP_SYS_PTRACE",
                                    errno=e.errno or _errno.EACCES) from None
    seen: List[str] = []
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) < 6 or "x" not in parts[1] or not parts[5].startswith("/"):
            continue
        path = parts[5]
        if path.endswith(" (deleted)"):
            continue
        if path not in seen:
            seen.append(path)
    root = f"/proc/{pid}/root"
    return [root + p if os.path.exists(root + p) else p for p in seen]


def resolve_binary(target: str, pid: Optional[int] = None) -> str:
    """The absolute path of the executable or library ``target`` names.

    A path (with a ``/``) must be an ELF file; a name is a library
    (``libc``, ``libssl.so.3``) or a program (``python3.11``).  With ``pid``,
    a name is looked up among the files that process mapped.
    """
    if not isinstance(target, str):
        raise BadTypeError(f"target must be a str, not {type(target).__name__}")
    if not target:
        raise BadArgumentError("target must be a path or a library name, not empty")
    if pid is not None and "/" not in target:
        files = mapped_files(pid)
        for path in files:
            if _name_matches(target, os.path.basename(path)):
                return path
        raise TargetNotFoundError("binary", target,
                                  sorted({os.path.basename(p) for p in files})[:8],
                                  detail=f"not mapped by process {pid}")
    if "/" in target:
        # a file seen through /proc/PID/root stays there (a container's own copy)
        path = os.path.abspath(target) if target.startswith("/proc/") \
            else os.path.realpath(target)
        if not os.path.isfile(path):
            raise TargetNotFoundError("binary", target, detail="no such file")
        if not _is_elf(path):
            raise BadArgumentError(f"{target} is not an ELF executable or library")
        return path
    path_dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d] + \
        ["/usr/local/bin", "/usr/bin", "/bin"]
    for d in (*path_dirs, *LIBRARY_DIRS):      # a file of exactly that name first
        path = os.path.join(d, target)
        if os.path.isfile(path) and _is_elf(path):
            return os.path.realpath(path)
    for d in LIBRARY_DIRS:
        for pattern in (f"{target}.so*", f"lib{target}.so*", f"{target}-*.so",
                        f"lib{target}-*.so"):
            for path in sorted(glob.glob(os.path.join(d, pattern))):
                if _name_matches(target, os.path.basename(path)) and _is_elf(path):
                    return os.path.realpath(path)
    raise TargetNotFoundError("binary", target, detail="not a path, and no library or program "
                              "of that name in " + ", ".join(LIBRARY_DIRS) + " or PATH")
