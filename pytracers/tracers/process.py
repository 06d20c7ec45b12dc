"""ProcessTracer: process lifecycle from sched_process_exec/fork/exit (proc.bpf.o, tp_btf).

BTF tracepoints hand the programs the kernel's own structs (task_struct,
linux_binprm) with their types, so parent, exit code and start time are read
directly.  One record type for the three events, ``ev.event`` says which:

* ``exec``: ``filename`` the program run, ``ppid``, ``lifetime_ns`` the age of
  the task when it exec'd;
* ``fork``: ``child_pid`` the new process (or thread, with ``threads=True``);
* ``exit``: ``exit_code`` as wait(2) encodes it, decoded into ``exit_status``
  (the value passed to exit(), None if killed by a signal), ``exit_signal``
  (None if it exited normally) and ``core_dumped``; ``lifetime_ns`` how long
  the task lived.

With ``stack=``, the stacks are the current task's when the event fires:
the forking parent's (its caller of fork/clone), the exiting task's (its
caller of exit; an exited process's mappings are gone by the time the record
is read, so its user frames are ``[unknown]``, reason ``process gone``, unless
the symboliser read them earlier), and at exec the new program's (the kernel's
exec path; in user space only the new image's entry point).
"""
from __future__ import annotations

import os
from typing import Any, Optional, Type

from ..kinds import TP_BTF
from .base import Tracer

__all__ = ["ProcessTracer", "EVENT_TYPES"]

EVENT_TYPES = {1: "exec", 2: "fork", 3: "exit"}


class ProcessTracer(Tracer):
    """Trace process exec, fork and exit (see the module docstring).

    ``events``: which of "exec", "fork", "exit" to deliver (default all; the
    others are dropped in Python).  ``threads``: also report new threads and
    every thread's exit, not only processes.
    """

    object_name = "proc"
    event_struct = "proc_event"
    kind = TP_BTF
    why = ("tp_btf: sched_process_exec/fork/exit hand over task_struct with its BTF type, so "
           "parent, exit code and start time are read directly; runs only on those events")
    PROGRAMS = {"exec": "proc_exec", "fork": "proc_fork", "exit": "proc_exit"}

    def __init__(self, events: Any = ("exec", "fork", "exit"), *, threads: bool = False,
                 **kw: Any) -> None:
        from ..errors import BadArgumentError
        if isinstance(events, str):
            events = (events,)
        self.event_kinds = tuple(events)
        bad = [e for e in self.event_kinds if e not in self.PROGRAMS]
        if bad or not self.event_kinds:
            raise BadArgumentError(f"events must be some of exec, fork, exit; got {events!r}")
        self.threads = bool(threads)
        super().__init__(**kw)

    def _configure(self, open_obj: Any) -> None:
        open_obj.only(*(self.PROGRAMS[e] for e in self.event_kinds))
        if self.threads:
            open_obj.config["cfg_threads"] = 1

    def _attach(self, obj: Any) -> None:
        for e in self.event_kinds:
            self._link(obj.programs[self.PROGRAMS[e]].attach())

    def _record_class(self, base: Type[Any]) -> Optional[Type[Any]]:
        fields = base._fields
        i_type, i_code = fields.index("type"), fields.index("exit_code")
        getitem = tuple.__getitem__

        def event(self: Any) -> str:
            t = getitem(self, i_type)
            return EVENT_TYPES.get(t, f"type_{t}")

        def exit_status(self: Any) -> Optional[int]:
            code = getitem(self, i_code)
            if getitem(self, i_type) != 3 or not os.WIFEXITED(code):
                return None
            return os.WEXITSTATUS(code)

        def exit_signal(self: Any) -> Optional[int]:
            code = getitem(self, i_code)
            if getitem(self, i_type) != 3 or not os.WIFSIGNALED(code):
                return None
            return os.WTERMSIG(code)

        def core_dumped(self: Any) -> bool:
            code = getitem(self, i_code)
            return getitem(self, i_type) == 3 and os.WIFSIGNALED(code) and os.WCOREDUMP(code)

        return type("ProcessEvent", (base,), {
            "__slots__": (), "__doc__": "A proc_event record with the exit code decoded",
            "event": property(event), "exit_status": property(exit_status),
            "exit_signal": property(exit_signal), "core_dumped": property(core_dumped)})
