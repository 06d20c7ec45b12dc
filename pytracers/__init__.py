"""pytracers: trace the Linux kernel from Python with precompiled CO-RE eBPF objects.

    import pytracers
    obj = pytracers.open("my.bpf.o")        # OpenObject: configure before load
    obj.config["cfg_pid"] = 1234
    loaded = obj.load()                      # Object: attach, read maps
    link = loaded.programs["handler"].attach("syscalls/sys_enter_openat")
"""
from __future__ import annotations

import os as _os

from . import errors
from .errors import *  # noqa: F401,F403
from .object import Object, OpenObject, open  # noqa: A004

__version__ = "0.1.0"


def objects_dir() -> str:
    """The directory holding the precompiled objects shipped with pytracers."""
    return _os.path.join(_os.path.dirname(__file__), "bpf")


def object_path(name: str) -> str:
    """Path of a shipped object by short name ("exec" -> .../bpf/exec.bpf.o)."""
    return _os.path.join(objects_dir(), f"{name}.bpf.o")


__all__ = ["open", "OpenObject", "Object", "errors", "objects_dir", "object_path",
           *errors.__all__]
