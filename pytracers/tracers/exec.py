"""ExecTracer: process executions from the execve tracepoints (exec.bpf.o, kind tp).

``syscalls:sys_enter_execve`` records who asked to run what (pid, ppid, uid,
filename, the first four arguments); ``sys_exit_execve`` of the same thread
completes the record with the result (0 on success, -errno on failure) and
the new command name.  Tracepoints are a stable interface and cost nothing
outside execve.
"""
from __future__ import annotations

from typing import Any, List, Optional, Type

from .base import Tracer

__all__ = ["ExecTracer"]

EXEC_ARGS = ("arg0", "arg1", "arg2", "arg3")


class ExecTracer(Tracer):
    """Trace execve(2): ``ev.pid``, ``ev.ppid``, ``ev.uid``, ``ev.filename``,
    ``ev.argv`` (up to the first four arguments), ``ev.ret``, ``ev.comm``."""

    object_name = "exec"
    event_struct = "exec_event"
    kind = "tp"
    why = ("tp: syscalls:sys_enter_execve/sys_exit_execve run only on execve and are a "
           "stable ABI")

    def _configure(self, open_obj: Any) -> None:
        open_obj.only("exec_enter", "exec_exit")

    def _attach(self, obj: Any) -> None:
        self._link(obj.programs["exec_enter"].attach())
        self._link(obj.programs["exec_exit"].attach())

    def _record_class(self, base: Type[Any]) -> Optional[Type[Any]]:
        fields = base._fields
        i_argc = fields.index("argc")
        idx = [fields.index(a) for a in EXEC_ARGS]
        getitem = tuple.__getitem__

        def argv(self: Any) -> List[str]:
            n = min(getitem(self, i_argc), len(idx))
            return [getitem(self, i) for i in idx[:n]]

        return type("ExecEvent", (base,), {"__slots__": (), "argv": property(argv),
                                           "__doc__": "An exec_event record with argv"})
