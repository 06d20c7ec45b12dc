"""The precompiled tracers, one class per probe kind (see each module)."""
from __future__ import annotations

# Each tracer's module is imported on first use (module __getattr__ below):
# opening one tracer does not pay for the others.

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .base import Tracer
    from .exec import ExecTracer
    from .function import FunctionTracer
    from .policy import FmodRetPolicy
    from .process import ProcessTracer
    from .syscalls import SyscallStats, SyscallTracer
    from .tracepoint import TracepointTracer
    from .user_function import UserFunctionTracer
    from .user_usdt import UsdtTracer
    from .python import PythonTracer

__all__ = ["Tracer", "ExecTracer", "SyscallTracer", "SyscallStats", "ProcessTracer",
           "FunctionTracer", "FmodRetPolicy", "TracepointTracer", "UserFunctionTracer",
           "UsdtTracer", "PythonTracer"]

_HOME = {"Tracer": "base", "ExecTracer": "exec", "SyscallTracer": "syscalls",
         "SyscallStats": "syscalls",
         "ProcessTracer": "process", "FunctionTracer": "function", "FmodRetPolicy": "policy",
         "TracepointTracer": "tracepoint", "UserFunctionTracer": "user_function",
         "UsdtTracer": "user_usdt", "PythonTracer": "python"}


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'pytracers.tracers' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_HOME))
