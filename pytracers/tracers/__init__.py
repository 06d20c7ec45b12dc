"""The precompiled tracers, one class per probe kind (see each module)."""
from __future__ import annotations

from .base import Tracer
from .exec import ExecTracer
from .function import FunctionTracer
from .policy import FmodRetPolicy
from .process import ProcessTracer
from .syscalls import SyscallTracer

__all__ = ["Tracer", "ExecTracer", "SyscallTracer", "ProcessTracer", "FunctionTracer",
           "FmodRetPolicy"]
