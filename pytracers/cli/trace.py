"""``pytracers trace [KIND:]TARGET``: a kernel function, syscall(s), process
events or any tracepoint, the probe kind chosen by :mod:`pytracers.choose`."""
from __future__ import annotations

import argparse
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from .. import errors as E
from ..kinds import KPROBE_MULTI, TP, TP_BTF, USDT
from .loop import BatchSource, Stopper, TracerSource, need_bpf_privileges, run_events
from .usdt import add_trace_options, trace_usdt_command
from .options import (ALL_KINDS, SYSCALL_KINDS, USER_KINDS, common, split_names, subcommand,
                      tracer_options)
from .output import Clock, Column, Output, args_text, hms, kernel_value, lat_us, note
from .status import EXIT_NOT_SUPPORTED, EXIT_USAGE, PROG, CliError, cli_words, one_line

def _syscall_function(name: str) -> str:
    from ..kernel.symbols import syscall_function   # dataclasses, inspect: only here
    return syscall_function(name)


PROCESS_EVENTS = {"sched_process_exec": "exec", "sched_process_fork": "fork",
                  "sched_process_exit": "exit"}

# Batch wakeups: the CLI's own syscalls (reading the ring, writing stdout)
# must not wake it once per event, or tracing e.g. write(2) would feed itself.
WAKEUP_BYTES = 64 * 1024
LATENCY = 0.1
# The ring of a record-per-event trace: 4 MiB (the library's default is
# 256 KiB) holds ~35,000 syscall records, a second of a 35 K/s storm, so a
# reader the scheduler leaves waiting for tens of milliseconds on a busy
# machine loses nothing (bench/run --only bpftrace; BENCHMARKS.md section 8).
RING_BYTES = 4 << 20


def add_command(sub: Any) -> None:
    t = subcommand(sub, "trace", "trace a kernel function, a syscall or a tracepoint; the "
                                 "probe kind is chosen for you")
    t.add_argument("target", metavar="[KIND:]TARGET",
                   help="a kernel function (do_unlinkat), a syscall (syscall:openat), "
                        "any tracepoint CATEGORY:NAME (sched:sched_switch: its fields as "
                        "name=value, kind tp), or "
                        f"KIND:TARGET with KIND one of {', '.join(ALL_KINDS)} "
                        "(tp/raw_tp/tp_btf take a syscall name; kprobe_multi a glob); "
                        "sched:sched_process_exec|fork|exit use the process tracer (tp_btf), "
                        "tp:sched:sched_process_exec the tracepoint's own fields; "
                        "a user-space function: uprobe:TARGET:SYMBOL or uretprobe:TARGET:SYMBOL "
                        "(TARGET a path, a library such as libc, or a command; with --pid the "
                        "file that process mapped, and only that process); "
                        "usdt:BINARY:PROVIDER:NAME a USDT probe of a user program")
    t.add_argument("--stable", action="store_true",
                   help="trace the syscall tracepoints that stand in for a kernel function "
                        "(a stable interface) instead of the function itself")
    t.add_argument("--no-latency", dest="no_latency", action="store_true",
                   help="do not time the calls: one program per call, at exit (arguments "
                        "and return value), about half the cost on the traced path")
    t.add_argument("--string-arg", dest="string_arg", metavar="ARG",
                   help="functions (kernel, uprobe:/uretprobe:): read this char * argument "
                        "(its name, or its index from 0) as a C string, up to 63 bytes")
    add_trace_options(t)
    t.add_argument("--stack", choices=("kernel", "user", "both"),
                   help="record the stacks of each event (JSON: kstack/ustack frames)")
    common(t, kinds=ALL_KINDS)
    t.set_defaults(func=cmd_trace)


# ---- the target ------------------------------------------------------------------------

class Target:
    """What `trace` was asked for: a function, syscall(s), process events or a
    tracepoint."""

    def __init__(self, what: str, names: List[str], kind: Optional[str]) -> None:
        self.what = what          # "function", "syscall", "process" or "tracepoint"
        self.names = names
        self.kind = kind

    @property
    def label(self) -> str:
        return ",".join(self.names)


def parse_target(spec: str, kind: Optional[str]) -> Target:
    """`[KIND:]TARGET` (and --kind) -> Target; raises CliError for contradictions."""
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in USER_KINDS:
        if kind and kind != prefix:
            raise CliError(f"{spec!r} names kind {prefix} but --kind says {kind}", EXIT_USAGE,
                           "give the kind once")
        from .user import split_user_target
        return Target("user_function", list(split_user_target(prefix, rest)), prefix)
    if sep and prefix in ALL_KINDS:
        if kind and kind != prefix:
            raise CliError(f"{spec!r} names kind {prefix} but --kind says {kind}", EXIT_USAGE,
                           "give the kind once")
        kind, spec = prefix, rest
        prefix, sep, rest = spec.partition(":")
    if not spec:
        raise CliError("no target after the kind", EXIT_USAGE,
                       f"e.g. {PROG} trace fentry:do_unlinkat")
    if sep:
        if prefix in ("syscall", "sys"):
            return Target("syscall", split_names(rest), _syscall_kind(kind, spec))
        if prefix == "syscalls":                       # the tracefs name of one
            name = rest
            for p in ("sys_enter_", "sys_exit_"):
                if name.startswith(p):
                    name = name[len(p):]
            return Target("syscall", [name], _syscall_kind(kind, spec))
        if prefix == "sched" and rest in PROCESS_EVENTS and kind != TP:
            if kind not in (None, TP_BTF):
                raise CliError(f"{spec} is traced with tp_btf or tp, not {kind}",
                               EXIT_NOT_SUPPORTED,
                               f"use tp_btf:{rest} (the process tracer) or tp:{spec} (the "
                               "tracepoint's own fields)")
            return Target("process", [PROCESS_EVENTS[rest]], TP_BTF)
        # any other tracepoint: the tracepoint tracer, kind tp
        if kind not in (None, TP):
            raise CliError(f"tracepoint {spec} is traced with tp, not {kind}: raw_tp and "
                           "tp_btf hand over the kernel's own arguments, not the record its "
                           "format file describes", EXIT_NOT_SUPPORTED, f"use tp:{spec}")
        from ..tracers.tracepoint import split_tracepoint_name
        try:
            split_tracepoint_name(spec)
        except E.BadArgumentError as e:
            raise CliError(str(e), EXIT_USAGE, f"e.g. {PROG} trace sched:sched_switch; "
                           f"{PROG} list tracepoints GLOB") from None
        return Target("tracepoint", [spec], kind)
    if spec in PROCESS_EVENTS and kind == TP_BTF:
        return Target("process", [PROCESS_EVENTS[spec]], kind)
    if kind in SYSCALL_KINDS:
        return Target("syscall", split_names(spec), kind)
    if any(c in spec for c in "*?[") and kind in (None, KPROBE_MULTI):
        return Target("function", [spec], KPROBE_MULTI)
    return Target("function", [spec], kind)


def _syscall_kind(kind: Optional[str], spec: str) -> Optional[str]:
    if kind is not None and kind not in SYSCALL_KINDS:
        raise CliError(f"syscall target {spec} cannot be traced with {kind}: syscalls are "
                       f"traced with {', '.join(SYSCALL_KINDS)}", EXIT_NOT_SUPPORTED,
                       "trace the kernel function instead, e.g. "
                       f"{kind}:{_syscall_function('NAME')}")
    return kind


def _is_syscall(name: str) -> bool:
    from ..tracers.syscalls import syscall_number
    try:
        syscall_number(name)
        return True
    except (E.TargetNotFoundError, E.BadArgumentError):
        return False


# ---- starting the tracer ---------------------------------------------------------------

def open_trace(target: Target, args: argparse.Namespace) -> Tuple[TracerSource, str]:
    """Start the tracer for a target; (source, what to say on stderr about the choice)."""
    kw = tracer_options(args, wakeup_bytes=WAKEUP_BYTES, latency=LATENCY, ring_size=RING_BYTES)
    if getattr(args, "stack", None):
        kw["stack"] = args.stack
    t: Any
    if target.what == "process":
        from ..tracers.process import ProcessTracer
        t = ProcessTracer(events=target.names, **kw)
        return TracerSource(t, f"sched:sched_process_{target.label}"), ""
    if target.what == "user_function":
        from .user import open_user_trace
        t = open_user_trace(target.kind or "", target.names[0], target.names[1], kw,
                            getattr(args, "string_arg", None))
        return TracerSource(t, ":".join(target.names)), ""
    string_arg = getattr(args, "string_arg", None)
    if string_arg is not None:
        if target.what != "function" or getattr(args, "stable", False):
            raise CliError("--string-arg applies to functions (kernel or uprobe:TARGET:SYMBOL)",
                           EXIT_USAGE, f"e.g. {PROG} trace do_sys_openat2 --string-arg filename")
        kw["string_arg"] = int(string_arg) if string_arg.isdigit() else string_arg
    from ..choose import stable_tracepoints, trace_function, trace_syscall, trace_tracepoint
    if target.what == "tracepoint":
        t = trace_tracepoint(target.names[0], kind=target.kind, **kw)
        return TracerSource(t, target.names[0]), ""
    if getattr(args, "no_latency", False):
        kw["measure_latency"] = False
    if target.what == "syscall":
        t = trace_syscall(target.names, kind=target.kind, **kw)
        return TracerSource(t, f"syscall {target.label}"), ""
    name = target.names[0]
    stable = bool(getattr(args, "stable", False))
    try:
        t = trace_function(name, kind=target.kind, stable=stable, **kw)
    except E.TargetNotFoundError:
        if target.kind is None and not stable and _is_syscall(name):
            t = trace_syscall(name, **kw)
            return (TracerSource(t, f"syscall {name}"),
                    f"{name} is not a kernel function but a syscall; ")
        raise
    except E.NotSupportedError as e:
        if target.kind is not None or stable:
            raise
        # Neither fentry nor kprobe: point at what does work, in CLI terms.
        alt = stable_tracepoints(name)
        if alt:
            hint = (f"`{PROG} trace --stable {name}` traces the syscall "
                    f"tracepoint{'s' if len(alt) > 1 else ''} of {', '.join(alt)} instead")
        else:
            hint = (f"syscall tracepoints may work here (`{PROG} trace syscall:NAME`); "
                    f"`{PROG} doctor` shows what this kernel supports")
        raise CliError(one_line(f"{e.feature} is not supported by this kernel: "
                                f"{e.reason}")[0], EXIT_NOT_SUPPORTED, hint) from e
    return TracerSource(t, name), ""


# ---- functions, syscalls, process events: one row per record ------------------------------

FUNCTION_COLUMNS = [
    Column("TIME", 8, hms),
    Column("PCOMM", 16, lambda d: d.get("comm")),
    Column("PID", 7, lambda d: d.get("pid"), right=True),
    Column("TID", 7, lambda d: d.get("tid"), right=True),
    Column("LAT(us)", 9, lat_us, right=True),
    Column("RET", 10, lambda d: kernel_value(d.get("ret"), ret=True), right=True),
    Column("FUNCTION", 24, lambda d: d.get("name")),
    Column("ARGS", 0, lambda d: args_text(d.get("args"))),
]
SYSCALL_COLUMNS = [
    Column("TIME", 8, hms),
    Column("PCOMM", 16, lambda d: d.get("comm")),
    Column("PID", 7, lambda d: d.get("pid"), right=True),
    Column("TID", 7, lambda d: d.get("tid"), right=True),
    Column("SYSCALL", 16, lambda d: d.get("name")),
    Column("LAT(us)", 9, lat_us, right=True),
    Column("RET", 10, lambda d: kernel_value(d.get("ret"), ret=True), right=True),
    Column("ARGS", 0, lambda d: args_text(d.get("args"))),
]
PROCESS_COLUMNS = [
    Column("TIME", 8, hms),
    Column("PCOMM", 16, lambda d: d.get("comm")),
    Column("PID", 7, lambda d: d.get("pid"), right=True),
    Column("PPID", 7, lambda d: d.get("ppid"), right=True),
    Column("EVENT", 5, lambda d: d.get("event")),
    Column("DETAIL", 0, lambda d: _process_detail(d)),
]


def _process_detail(d: Mapping[str, Any]) -> str:
    ev = d.get("event")
    life = d.get("lifetime_ns")
    if ev == "exec":
        return f"{d.get('filename')} (process age {life / 1e6:.1f} ms)" if life else \
            str(d.get("filename"))
    if ev == "fork":
        return f"child {d.get('child_pid')}"
    if ev == "exit":
        if d.get("exit_signal") is not None:
            how = f"killed by signal {d['exit_signal']}" + \
                (" (core dumped)" if d.get("core_dumped") else "")
        else:
            how = f"status {d.get('exit_status')}"
        return how + (f" after {life / 1e6:.1f} ms" if life else "")
    return ""


def cmd_trace(args: argparse.Namespace) -> int:
    prefix, sep, rest = args.target.partition(":")
    if sep and prefix == USDT:
        return trace_usdt_command(rest, args)
    target = parse_target(args.target, args.kind)
    need_bpf_privileges()
    with Stopper() as stopper:
        src, prefix = open_trace(target, args)
        if target.what == "tracepoint":
            return _run_tracepoint(src, args, stopper)
        from ..tracers.process import ProcessTracer
        from ..tracers.syscalls import SyscallTracer
        # what the records are: a function asked for with --stable, or a
        # syscall's name, is traced by the syscall tracer
        if isinstance(src.tracer, SyscallTracer):
            columns, label = SYSCALL_COLUMNS, "syscall"
        elif isinstance(src.tracer, ProcessTracer):
            columns, label = PROCESS_COLUMNS, "process"
        else:
            columns, label = FUNCTION_COLUMNS, "function"
        out = Output(args.json, columns)
        clock = Clock()
        me = os.getpid()
        as_dict = src.tracer.event_dict

        def on_event(rec: Any) -> None:
            d = as_dict(rec)
            if d.get("pid") == me:                   # the CLI itself is never the story
                return
            d = {"event": d.get("event", label), "time": round(clock.wall(d["ts_ns"]), 6), **d}
            out.row(d)

        ready = f"trace: {prefix}{src.target} with {src.kind}: {cli_words(src.why)}"
        if args.json and label == "syscall" and not getattr(args, "stack", None):
            src = _json_batches(src, out, clock.offset_ns, me, on_event)
        tick = None
        if target.what == "user_function":
            from .user import watcher
            tick = watcher(src.tracer, stopper.stop)
        return run_events(src, out, stopper, args.duration, on_event, what="trace",
                          ready=ready, tick=tick)


def _json_batches(src: TracerSource, out: Output, offset_ns: int, me: int,
                  on_event: Callable[[Any], None]) -> BatchSource:
    """``trace syscall:... --json``: whole batches of records formatted at
    once (:mod:`pytracers.cli.jsonbatch`), the same lines as per event
    (``on_event``, which also prints the first few, before any backlog)."""
    tracer = src.tracer
    fmt: List[Any] = []                              # made at the first batch (numpy)

    def on_rows(rows: Any) -> None:
        if not fmt:
            from .jsonbatch import syscall_formatter
            fmt.append(syscall_formatter(tracer, tracer.ring.dtype, "syscall", offset_ns))
        mine = rows["pid"] == me                     # the CLI itself is never the story
        if mine.any():
            rows = rows[~mine]
        if len(rows):
            out.write_lines(fmt[0].format(rows), len(rows))

    batch = BatchSource(tracer, src.target, on_rows, on_event)
    batch.kind, batch.why = src.kind, src.why
    return batch


# ---- any tracepoint: its fields as name=value ---------------------------------------------

TRACEPOINT_COLUMNS = [
    Column("TIME", 8, hms),
    Column("PCOMM", 16, lambda d: d.get("comm")),
    Column("PID", 7, lambda d: d.get("pid"), right=True),
    Column("TID", 7, lambda d: d.get("tid"), right=True),
    Column("CPU", 3, lambda d: d.get("cpu"), right=True),
    Column("FIELDS", 0, lambda d: d["_text"]),
]


def _run_tracepoint(src: TracerSource, args: argparse.Namespace, stopper: Stopper) -> int:
    """`trace CATEGORY:NAME`: one line per event, the fields as name=value
    (or one JSON object per event, the fields under "fields")."""
    tracer = src.tracer
    out = Output(args.json, TRACEPOINT_COLUMNS)
    clock = Clock()
    me = os.getpid()

    def on_event(rec: Any) -> None:
        if rec.pid == me:                            # the CLI itself is never the story
            return
        rest = tracer.event_dict(rec)
        d: Dict[str, Any] = {"event": "tracepoint", "tracepoint": rest.pop("tracepoint"),
                             "time": round(clock.wall(rest["ts_ns"]), 6), **rest}
        if out.json:
            out.row(d)
            return
        d["_text"] = tracer.fields_text(rec)
        out.row(d)

    ready = f"trace: {src.target} with {src.kind}: {cli_words(src.why)}"
    rc = run_events(src, out, stopper, args.duration, on_event, what="trace", ready=ready)
    if tracer.truncated:
        note(f"trace: {tracer.truncated} field{'s' if tracer.truncated != 1 else ''} shown as "
             f"(truncated)/null: payload past the {tracer.copy_bytes} bytes copied per event")
    return rc
