"""``pytracers exec``: process executions, like execsnoop."""
from __future__ import annotations

import argparse
import shlex
from typing import Any, Mapping

from ..kinds import TP_BTF
from .loop import Stopper, TracerSource, need_bpf_privileges, run_events
from .options import EXEC_KINDS, common, subcommand, tracer_options
from .output import Clock, Column, Output, hms, note

EXEC_COLUMNS = [
    Column("TIME", 8, lambda d: hms(d)),
    Column("PCOMM", 16, lambda d: d.get("comm")),
    Column("PID", 7, lambda d: d.get("pid"), right=True),
    Column("PPID", 7, lambda d: d.get("ppid"), right=True),
    Column("UID", 5, lambda d: d.get("uid"), right=True),
    Column("RET", 4, lambda d: d.get("ret"), right=True),
    Column("ARGS", 0, lambda d: _exec_args(d)),
]


def add_command(sub: Any) -> None:
    x = subcommand(sub, "exec", "trace process executions (like execsnoop)")
    x.add_argument("-x", "--failed", action="store_true",
                   help="also show execs that failed (RET is -errno)")
    common(x, kinds=EXEC_KINDS)
    x.set_defaults(func=cmd_exec)


def _exec_args(d: Mapping[str, Any]) -> str:
    """The command line: the file run, then argv[1:], shell-quoted; " ..." when
    the record could not hold all of it."""
    args = list(d.get("args") or [])
    words = [d.get("filename") or (args[0] if args else "")] + args[1:]
    line = " ".join(shlex.quote(w) for w in words)
    return line + " ..." if d.get("args_truncated") else line


def _open_exec(args: argparse.Namespace) -> TracerSource:
    """tp (default): ExecTracer on the execve tracepoints -- arguments, uid,
    failed execs.  tp_btf: ProcessTracer's sched_process_exec -- successful
    execs only, no arguments, but the kernel's own view of the file run."""
    kw = tracer_options(args)
    if args.kind == TP_BTF:
        from ..tracers.process import ProcessTracer
        t = ProcessTracer(events=("exec",), **kw)
        if args.failed:
            note("exec: --failed has no effect with tp_btf (sched_process_exec fires only "
                 "for execs that succeeded)")
        return TracerSource(t, "sched:sched_process_exec")
    from ..tracers.exec import ExecTracer
    return TracerSource(ExecTracer(**kw), "syscalls:sys_enter_execve + sys_exit_execve")


def cmd_exec(args: argparse.Namespace) -> int:
    need_bpf_privileges()
    clock = Clock()
    out = Output(args.json, EXEC_COLUMNS)
    with Stopper() as stopper:
        src = _open_exec(args)
        as_dict = src.tracer.event_dict

        def on_event(rec: Any) -> None:
            d = as_dict(rec)
            if not args.failed and d.get("ret", 0) != 0:
                return
            d = {"event": "exec", "time": round(clock.wall(d["ts_ns"]), 6), **d}
            out.row(d)

        ready = (f"exec: {src.target} with {src.kind}" + (f": {src.why}" if src.why else "")
                 + ("; failed execs included" if args.failed else ""))
        return run_events(src, out, stopper, args.duration, on_event, what="exec", ready=ready)
