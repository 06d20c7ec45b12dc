"""Where the precompiled objects shipped with pytracers are (re-exported by
the package as ``pytracers.objects_dir`` / ``pytracers.object_path``).

A module of its own so that the library's own modules can find the shipped
objects without importing the package's ``__init__``.

build.py compiles every object once per architecture, each against that
architecture's vmlinux.h (libbpf's PT_REGS_* and pytracers' own register
frames differ per architecture): x86-64's are in ``bpf/``, arm64's in
``bpf/arm64/``.  The running machine's are used.
"""
from __future__ import annotations

import os

from .errors import NotSupportedError

# os.uname().machine -> subdirectory of bpf/ holding that architecture's
# objects (build.py's ARCHES)
ARCH_DIRS = {"x86_64": "", "aarch64": "arm64"}
# and the name the feature report and the doctor use for it
ARCH_NAMES = {"x86_64": "x86-64", "aarch64": "arm64"}


def machine() -> str:
    """The running machine's architecture as the kernel names it
    (``os.uname().machine``: ``x86_64``, ``aarch64``)."""
    return os.uname().machine


def arch_name(mach: str | None = None) -> str:
    """The architecture's usual name (``x86-64``, ``arm64``), or the kernel's
    name for one pytracers has no objects for."""
    mach = machine() if mach is None else mach
    return ARCH_NAMES.get(mach, mach)


def objects_dir(mach: str | None = None) -> str:
    """The directory holding the precompiled objects shipped with pytracers
    for this machine (or for ``mach``, an ``os.uname().machine`` value)."""
    mach = machine() if mach is None else mach
    sub = ARCH_DIRS.get(mach)
    if sub is None:
        raise NotSupportedError(f"pytracers' objects on {mach}",
                                reason=f"pytracers ships objects for "
                                       f"{', '.join(ARCH_NAMES.values())} only",
                                hint="build them for this architecture with build.py")
    base = os.path.join(os.path.dirname(__file__), "bpf")
    return os.path.join(base, sub) if sub else base


def object_path(name: str, mach: str | None = None) -> str:
    """Path of a shipped object by short name ("exec" -> .../bpf/exec.bpf.o,
    .../bpf/arm64/exec.bpf.o on arm64)."""
    return os.path.join(objects_dir(mach), f"{name}.bpf.o")
