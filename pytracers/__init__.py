"""pytracers: trace the Linux kernel from Python with precompiled CO-RE eBPF objects.

    import pytracers
    obj = pytracers.open("my.bpf.o")        # OpenObject: configure before load
    obj.config["cfg_pid"] = 1234
    loaded = obj.load()                      # Object: attach, read maps
    link = loaded.programs["handler"].attach("syscalls/sys_enter_openat")
"""
from __future__ import annotations

from . import errors
from .errors import *  # noqa: F401,F403

from ._version import __version__

# Imported on first use (module __getattr__ below), so that `import pytracers`
# costs only what is used: the object model loads libbpf, the feature prober
# and the "which probe?" entry points are only needed by whoever calls them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import features
    from ._shipped import object_path, objects_dir
    from .choose import (trace_function, trace_python, trace_syscall, trace_tracepoint,
                         trace_usdt, trace_user_function)
    from .kernel.tracefs import trace_pipe
    from .link import open_pinned_link
    from .maps import open_pinned_map
    from .object import Object, OpenObject, open  # noqa: A004
    from .profiler import OffCpuProfiler, Profile, Profiler, offcpu, profile
    from .tracers import (ExecTracer, FmodRetPolicy, FunctionTracer, ProcessTracer,
                          PythonTracer, SyscallStats, SyscallTracer, TracepointTracer, Tracer,
                          UsdtTracer, UserFunctionTracer)

_LAZY = {
    "open": ".object", "OpenObject": ".object", "Object": ".object",
    "objects_dir": "._shipped", "object_path": "._shipped",
    "features": None,
    "trace_function": ".choose", "trace_syscall": ".choose", "trace_tracepoint": ".choose",
    "trace_usdt": ".choose", "trace_python": ".choose",
    "UsdtTracer": ".tracers", "PythonTracer": ".tracers",
    "Tracer": ".tracers", "ExecTracer": ".tracers", "SyscallTracer": ".tracers",
    "ProcessTracer": ".tracers", "FunctionTracer": ".tracers", "FmodRetPolicy": ".tracers",
    "TracepointTracer": ".tracers", "SyscallStats": ".tracers",
    "trace_user_function": ".choose", "UserFunctionTracer": ".tracers",
    "trace_pipe": ".kernel.tracefs",
    "open_pinned_map": ".maps", "open_pinned_link": ".link",
    "profile": ".profiler", "Profiler": ".profiler", "Profile": ".profiler",
    "offcpu": ".profiler", "OffCpuProfiler": ".profiler",
}


def __getattr__(name: str) -> object:
    where = _LAZY.get(name, "")
    if where == "":
        raise AttributeError(f"module 'pytracers' has no attribute {name!r}")
    import importlib
    if where is None:                          # a submodule
        value: object = importlib.import_module(f".{name}", __name__)
    else:
        value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["open", "OpenObject", "Object", "errors", "objects_dir", "object_path",
           "features", "trace_function", "trace_syscall", "trace_tracepoint", "Tracer",
           "ExecTracer", "SyscallTracer", "ProcessTracer", "FunctionTracer", "FmodRetPolicy",
           "TracepointTracer", "SyscallStats", "trace_user_function", "UserFunctionTracer",
           "trace_usdt", "trace_python", "UsdtTracer", "PythonTracer", "trace_pipe",
           "open_pinned_map", "open_pinned_link", "profile", "Profiler", "Profile",
           "offcpu", "OffCpuProfiler",
           *errors.__all__]
