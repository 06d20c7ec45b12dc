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


# The tracers, the feature prober and the "which probe?" entry points (they
# use object_path above).
from . import features  # noqa: E402
from .choose import trace_function, trace_syscall  # noqa: E402
from .tracers import (ExecTracer, FmodRetPolicy, FunctionTracer, ProcessTracer,  # noqa: E402
                      SyscallTracer, Tracer)

__all__ = ["open", "OpenObject", "Object", "errors", "objects_dir", "object_path",
           "features", "trace_function", "trace_syscall", "Tracer", "ExecTracer",
           "SyscallTracer", "ProcessTracer", "FunctionTracer", "FmodRetPolicy",
           *errors.__all__]
