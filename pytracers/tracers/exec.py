"""ExecTracer: process executions from the execve tracepoints (exec.bpf.o, kind tp).

``syscalls:sys_enter_execve`` records who asked to run what (pid, ppid, uid,
filename, the command line); ``sys_exit_execve`` of the same thread
completes the record with the result (0 on success, -errno on failure) and
the new command name.  Tracepoints are a stable interface and cost nothing
outside execve.

The command line is copied whole up to a bound: at most :data:`MAX_ARGS`
arguments and :data:`ARGBUF_SIZE` bytes in all, each argument counting its
length plus one (its NUL).  ``ev.argv`` is the list of arguments copied and
``ev.args_truncated`` tells whether the command line went on: more
arguments than the bound, an argument cut by the space left (then it is the
last one of ``ev.argv``, cut short), or an argument that could not be read.
The bounds are ``EXEC_MAX_ARGS`` and ``EXEC_ARGBUF_SIZE`` of
``bpf_src/exec.bpf.c`` (the record's layout itself comes from the object's BTF).

With ``stack=``, the stacks are taken at ``sys_enter_execve``: the caller of
execve.  After a successful exec the process runs another program, so the
user frames of a record with ``ret == 0`` are addresses only (``[unknown]``,
counted as ``image replaced by exec``); a failed exec's are symbolised.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Type

from ..kinds import TP
from .base import Tracer

__all__ = ["ExecTracer", "MAX_ARGS", "ARGBUF_SIZE"]

#: At most this many arguments are copied (``EXEC_MAX_ARGS`` in exec.bpf.c).
MAX_ARGS = 32
#: At most this many bytes of arguments, NULs included (``EXEC_ARGBUF_SIZE``).
ARGBUF_SIZE = 2048


class ExecTracer(Tracer):
    """Trace execve(2): ``ev.pid``, ``ev.ppid``, ``ev.uid``, ``ev.filename``,
    ``ev.argv`` (the command line, up to 32 arguments and 2048 bytes),
    ``ev.args_truncated`` (True when the command line did not fit),
    ``ev.argc`` (``len(ev.argv)``), ``ev.ret``, ``ev.comm``."""

    object_name = "exec"
    event_struct = "exec_event"
    kind = TP
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
        i_len = fields.index("argbuf_len")
        i_buf = fields.index("argbuf")
        i_cut = fields.index("args_truncated")
        getitem = tuple.__getitem__

        def argv(self: Any) -> List[str]:
            """The arguments copied, in order (argv[0] first)."""
            n = getitem(self, i_argc)
            if not n:
                return []
            buf = getitem(self, i_buf)[:getitem(self, i_len)]
            return [a.decode("utf-8", "replace") for a in buf.split(b"\0")[:n]]

        def args_truncated(self: Any) -> bool:
            """True when the command line did not fit in the record."""
            return bool(getitem(self, i_cut))

        return type("ExecEvent", (base,), {
            "__slots__": (), "argv": property(argv, doc=argv.__doc__),
            "args_truncated": property(args_truncated, doc=args_truncated.__doc__),
            "__doc__": "An exec_event record with argv and args_truncated"})

    @staticmethod
    def _ustack_replaced(ev: Any) -> bool:
        # the user stack is execve's caller's, taken at sys_enter; after a
        # successful exec the process runs another image
        return ev.ret == 0

    # the packed command line: argv replaces it
    record_internals = ("argc", "argbuf", "argbuf_len")

    def event_dict(self, ev: Any) -> Dict[str, Any]:
        """The record as plain data (see :meth:`Tracer.event_dict`); the
        command line is ``"args"`` (``ev.argv``), then ``"args_truncated"``."""
        d = super().event_dict(ev)
        d["args"] = d.pop("argv")
        d["args_truncated"] = d.pop("args_truncated")
        return d
