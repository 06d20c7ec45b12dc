"""The ``pytracers`` command line (also ``python -m pytracers``).

Subcommands::

    pytracers doctor [--json]                 what this kernel can do, and why not
    pytracers list tracepoints GLOB           tracepoints, and which kinds reach them
    pytracers list functions GLOB             kernel functions, and which kinds can attach
    pytracers trace [KIND:]TARGET             a kernel function or a syscall, kind chosen for you
    pytracers exec                            process executions (like execsnoop)
    pytracers syscalls                        live syscall counts and latency per process
    pytracers agent --listen HOST:PORT        Prometheus exporter (pytracers.agent)

Output contract: with ``--json`` stdout carries JSON lines only, one event
(or one table row) per line; everything for humans -- the probe kind chosen
and why, the end-of-run summary, errors -- goes to stderr.  Errors are one
line with a hint and an exit status per class (see EXIT_* below); tracebacks
only with ``--debug``.  SIGINT and SIGTERM stop a trace cleanly: the links are
detached, the summary printed, and the status is 0.

The CLI only drives the library (tracers, feature prober, tracefs, BTF); it
loads no BPF of its own making.
"""
from __future__ import annotations

import argparse
import errno as _errno
import importlib
import json
import logging
import os
import shlex
import signal
import sys
import time
from types import FrameType
from typing import (Any, Callable, Dict, Iterable, List, Mapping, NoReturn, Optional,
                    Sequence, TextIO, Tuple)

from . import errors as E

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_NOT_FOUND",
           "EXIT_NOT_SUPPORTED", "EXIT_PERMISSION", "EXIT_INTERRUPTED"]

PROG = "pytracers"

EXIT_OK = 0
EXIT_ERROR = 1           # anything else: a load/attach failure, an I/O error, a bug
EXIT_USAGE = 2           # bad command line or argument value
EXIT_NOT_FOUND = 3       # no such function / tracepoint / syscall; a list matched nothing
EXIT_NOT_SUPPORTED = 4   # this kernel (or this installation) cannot do it
EXIT_PERMISSION = 5      # not root / missing CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN
EXIT_INTERRUPTED = 130   # a second Ctrl-C while stopping, or Ctrl-C outside a trace

EPILOG = """\
exit status:
  0    success; also a trace ended by --duration, Ctrl-C (SIGINT) or SIGTERM
  1    other error (load or attach failure, I/O error)
  2    usage error: bad command line or argument value
  3    not found: no such function, tracepoint or syscall; a list matched nothing
  4    not supported by this kernel or installation (see `pytracers doctor`)
  5    permission denied: run as root or grant CAP_BPF, CAP_PERFMON (CAP_SYS_ADMIN)
  130  interrupted outside a trace, or a second Ctrl-C while stopping

With --json, stdout carries only JSON lines (one event or row per line);
the probe choice, the summary and errors go to stderr.  --debug shows tracebacks.
"""

# The kinds a user may name, in `--kind K` or `trace K:TARGET`.
FUNCTION_KINDS = ("fentry", "fexit", "kprobe", "kretprobe", "kprobe_multi")
SYSCALL_KINDS = ("tp", "raw_tp", "tp_btf")
ALL_KINDS = SYSCALL_KINDS + FUNCTION_KINDS
POLL_SLICE = 0.1         # seconds between looks at the stop flag and the deadline

log = logging.getLogger("pytracers.cli")


# --------------------------------------------------------------------------------------
# errors -> one line + exit status

class CliError(Exception):
    """An error the CLI reports as one line, with a hint and an exit status."""

    def __init__(self, message: str, code: int = EXIT_ERROR, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.hint = hint


def _one_line(text: str) -> Tuple[str, bool]:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    if not lines:
        return "", False
    return lines[0].rstrip(":;"), len(lines) > 1


def classify(exc: BaseException, command: str = "") -> Tuple[int, str, str]:
    """(exit status, one-line message, hint) for an exception."""
    if isinstance(exc, CliError):
        msg, _ = _one_line(str(exc))
        return exc.code, msg, exc.hint
    msg, more = _one_line(str(exc))
    if isinstance(exc, E.TargetNotFoundError):
        what = {"function": "functions", "tracepoint": "tracepoints"}.get(exc.kind)
        if what:
            stem = exc.name.split(":")[-1][:4] or "*"
            hint = f"search with: {PROG} list {what} '*{stem}*'"
        else:
            hint = f"check the name; {PROG} {command or 'COMMAND'} --help"
        return EXIT_NOT_FOUND, msg, hint
    if isinstance(exc, E.NotSupportedError):
        hint = "" if exc.hint else f"`{PROG} doctor` shows what this kernel supports"
        return EXIT_NOT_SUPPORTED, msg, hint
    if isinstance(exc, (E.PermissionDeniedError, E.InsecureFileError)) or (
            isinstance(exc, (E.TracefsError, PermissionError))
            and getattr(exc, "errno", None) in (_errno.EPERM, _errno.EACCES)):
        return (EXIT_PERMISSION, msg,
                "run as root (sudo), or grant CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN on "
                "kernels before 5.8)")
    if isinstance(exc, (E.BadArgumentError, E.BadTypeError)):
        return EXIT_USAGE, msg, f"{PROG} {command or ''} --help".replace("  ", " ")
    if isinstance(exc, E.VerifierError):
        return EXIT_ERROR, msg, "--debug prints the verifier log"
    hint = "--debug shows the details" if more else ""
    if not isinstance(exc, (E.PytracersError, OSError)):
        msg = f"{type(exc).__name__}: {msg}"
        hint = "this is a bug in pytracers; --debug shows the traceback"
    return EXIT_ERROR, msg, hint


def _report_error(exc: BaseException, command: str, debug: bool) -> int:
    code, msg, hint = classify(exc, command)
    if debug and not isinstance(exc, CliError):
        import traceback
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    where = f"{PROG} {command}".strip()
    line = f"{where}: error: {msg}"
    if hint:
        line += f" (hint: {hint})"
    print(line, file=sys.stderr, flush=True)
    return code


def need_bpf_privileges() -> None:
    """Fail early, in one line, when this process cannot load tracing programs."""
    from ._errmap import missing_bpf_caps
    cap = missing_bpf_caps(tracing=True)
    if cap:
        raise E.PermissionDeniedError(
            "loading BPF tracing programs", cap,
            detail="not running as root" if os.geteuid() != 0 else
            "this root process has had its capabilities dropped")


def _optional_module(name: str, what: str) -> Any:
    """Import a pytracers module that another part of the project provides."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == name:
            raise CliError(f"{what} is not available in this installation ({name} is missing)",
                           EXIT_NOT_SUPPORTED, "upgrade pytracers") from e
        raise


# --------------------------------------------------------------------------------------
# output

class Clock:
    """Kernel CLOCK_MONOTONIC timestamps (bpf_ktime_get_ns) -> wall clock."""

    def __init__(self) -> None:
        self.offset_ns = time.time_ns() - time.monotonic_ns()

    def wall(self, ts_ns: int) -> float:
        return (ts_ns + self.offset_ns) / 1e9

    def hms(self, ts_ns: int) -> str:
        return time.strftime("%H:%M:%S", time.localtime(self.wall(ts_ns)))


class Column:
    """One column of a streamed table: a header, a width and how to format a value."""

    def __init__(self, header: str, width: int, key: Callable[[Any], Any],
                 right: bool = False) -> None:
        self.header = header
        self.width = width
        self.key = key
        self.right = right

    def cell(self, text: str, last: bool) -> str:
        if last:
            return text
        return text.rjust(self.width) if self.right else text.ljust(self.width)


class Output:
    """Where events go: aligned columns for people, JSON lines for programs.

    In JSON mode nothing but JSON lines is ever written to stdout.
    """

    def __init__(self, json_mode: bool, columns: Sequence[Column] = (),
                 stream: Optional[TextIO] = None) -> None:
        self.json = json_mode
        self.columns = list(columns)
        self.stream = stream or sys.stdout
        self._header_done = False
        self.rows = 0

    def _line(self, cells: Sequence[str]) -> str:
        last = len(self.columns) - 1
        return " ".join(c.cell(v, i == last) for i, (c, v) in
                        enumerate(zip(self.columns, cells))).rstrip()

    def header(self) -> None:
        if self.json or self._header_done or not self.columns:
            return
        self._header_done = True
        self.stream.write(self._line([c.header for c in self.columns]) + "\n")

    def row(self, item: Any, as_json: Optional[Mapping[str, Any]] = None) -> None:
        self.rows += 1
        if self.json:
            self.stream.write(dumps(as_json if as_json is not None else item) + "\n")
            return
        self.header()
        self.stream.write(self._line([_text(c.key(item)) for c in self.columns]) + "\n")

    def flush(self) -> None:
        self.stream.flush()


def _text(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _jsonable(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).split(b"\0", 1)[0].decode("utf-8", "replace")
    if hasattr(v, "_asdict"):
        return {k: _jsonable(x) for k, x in v._asdict().items() if not k.startswith("_")}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if hasattr(v, "tolist"):                       # numpy scalars and arrays
        return v.tolist()
    return v


def dumps(obj: Any) -> str:
    return json.dumps(_jsonable(obj), separators=(", ", ": "), default=str)


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str],
                stream: Optional[TextIO] = None, right: Iterable[int] = ()) -> None:
    """A table whose column widths fit its content (the last column is free)."""
    out = stream or sys.stdout
    right = set(right)
    cells = [[_text(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in cells:
        for i, c in enumerate(r[:-1]):
            widths[i] = max(widths[i], len(c))
    for r in [list(headers)] + cells:
        parts = []
        for i, c in enumerate(r):
            if i == len(r) - 1:
                parts.append(c)
            else:
                parts.append(c.rjust(widths[i]) if i in right else c.ljust(widths[i]))
        out.write("  ".join(parts).rstrip() + "\n")


def note(msg: str) -> None:
    """A line for the human on stderr (never stdout)."""
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# stopping: SIGINT, SIGTERM, --duration, a closed stdout

class Stopper:
    """Turns SIGINT/SIGTERM into a flag the event loop looks at.

    The first signal asks the loop to stop; cleanup (detaching links, reading
    the lost counters, printing the summary) then runs undisturbed.  A second
    SIGINT while stopping raises KeyboardInterrupt (exit 130): the process
    exits and the kernel still detaches every link with its last fd.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.reason = ""
        self._old: Dict[int, Any] = {}

    def _handler(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum
            self.reason = f"stopped by {signal.Signals(signum).name}"

    def stop(self, reason: str) -> None:
        if not self.reason:
            self.reason = reason

    @property
    def stopped(self) -> bool:
        return self.signum is not None or bool(self.reason)

    def __enter__(self) -> "Stopper":
        for s in self.SIGNALS:
            self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class Source:
    """What the event loop reads: a started tracer seen through one interface.

    ``poll(timeout, callback)`` delivers decoded records; ``lost`` counts the
    records the kernel side could not reserve; ``close()`` detaches and frees.
    ``kind`` and ``why`` say which probe kind runs and why it was chosen.
    """

    kind = ""
    why = ""
    target = ""

    def poll(self, timeout: float, callback: Callable[[Any], Any]) -> int:
        raise NotImplementedError

    @property
    def lost(self) -> int:
        return 0

    def close(self) -> None:
        pass


class ObjectSource(Source):
    """A shipped object loaded and attached here, read through its ring buffer."""

    def __init__(self, obj: Any, ring: Any, kind: str, target: str, why: str) -> None:
        self.obj = obj
        self.ring = ring
        self.kind = kind
        self.target = target
        self.why = why

    def poll(self, timeout: float, callback: Callable[[Any], Any]) -> int:
        return int(self.ring.poll(timeout, callback))

    @property
    def lost(self) -> int:
        return int(self.obj.maps["lost"].sum_percpu_u64())

    def close(self) -> None:
        self.obj.close()


class TracerSource(Source):
    """A pytracers tracer object (pytracers.tracers / trace_function / trace_syscall)."""

    def __init__(self, tracer: Any, target: str = "") -> None:
        self.tracer = tracer
        self.kind = str(getattr(tracer, "kind", "") or "")
        self.why = str(getattr(tracer, "why", "") or "")
        self.target = target

    def poll(self, timeout: float, callback: Callable[[Any], Any]) -> int:
        t = self.tracer
        if hasattr(t, "poll"):
            return int(t.poll(timeout, callback))
        n = 0
        for ev in t.events(timeout=timeout):
            callback(ev)
            n += 1
        return n

    @property
    def lost(self) -> int:
        lost = getattr(self.tracer, "lost", 0)
        return int(lost() if callable(lost) else lost)

    def close(self) -> None:
        self.tracer.close()


def run_events(source: Source, out: Output, stopper: Stopper, duration: Optional[float],
               on_event: Callable[[Any], None], *, what: str,
               tick: Optional[Tuple[float, Callable[[], None]]] = None) -> int:
    """The event loop shared by every streaming command: poll until the
    duration ends, a signal arrives or stdout closes; then detach, and print
    the summary (events seen and lost) on stderr."""
    start = time.monotonic()
    deadline = None if not duration else start + duration
    next_tick = None if tick is None else start + tick[0]
    seen = [0]

    def deliver(ev: Any) -> None:
        seen[0] += 1
        on_event(ev)

    lost: Optional[int] = None
    elapsed = 0.0
    try:
        try:
            while not stopper.stopped:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    stopper.stop(f"after {duration:g} s")
                    break
                wait = POLL_SLICE
                if deadline is not None:
                    wait = min(wait, deadline - now)
                if next_tick is not None:
                    wait = max(0.0, min(wait, next_tick - now))
                if source.poll(wait, deliver):
                    out.flush()
                if tick is not None and next_tick is not None and time.monotonic() >= next_tick:
                    tick[1]()
                    out.flush()
                    next_tick += tick[0]
            source.poll(0.0, deliver)            # what was already in the ring
            out.flush()
        except BrokenPipeError:
            stopper.stop("stdout closed")
            _silence_stdout()
        lost = source.lost
        elapsed = time.monotonic() - start
    finally:
        source.close()
    reason = stopper.reason or "stopped"
    shown = "" if out.rows == seen[0] or tick is not None else f", {out.rows} shown"
    note(f"{what}: {seen[0]} event{'s' if seen[0] != 1 else ''} seen{shown}, {lost} lost "
         f"in {elapsed:.1f} s ({reason}); probes detached")
    return EXIT_OK


def _silence_stdout() -> None:
    """After EPIPE on stdout: send further writes (and the exit flush) nowhere."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


# --------------------------------------------------------------------------------------
# helpers shared by commands

def _comm(value: str) -> str:
    raw = value.encode()
    if not raw:
        raise argparse.ArgumentTypeError("must not be empty")
    if len(raw) > 15:
        # The kernel keeps only the first 15 bytes of a command name.
        return raw[:15].decode("utf-8", "ignore")
    return value


def _pid(value: str) -> int:
    try:
        n = int(value, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a process id: {value!r}") from None
    if not 0 < n < 1 << 32:
        raise argparse.ArgumentTypeError(f"not a process id: {value!r}")
    return n


def _seconds(value: str) -> float:
    try:
        s = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not s > 0 or s != s or s == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {value!r}")
    return s


def _record_dict(rec: Any) -> Dict[str, Any]:
    """A decoded record as a plain dict: private fields dropped, argN folded into args."""
    if hasattr(rec, "_asdict"):
        d = dict(rec._asdict())
    elif isinstance(rec, Mapping):
        d = dict(rec)
    else:
        d = {k: getattr(rec, k) for k in dir(rec) if not k.startswith("_")
             and not callable(getattr(rec, k))}
    d = {k: _jsonable(v) for k, v in d.items() if not k.startswith("_")}
    argn = sorted((k for k in d if k.startswith("arg") and k[3:].isdigit()),
                  key=lambda k: int(k[3:]))
    if argn and "args" not in d:
        vals = [d.pop(k) for k in argn]
        n = d.pop("argc", None)
        if isinstance(n, int) and all(isinstance(v, str) for v in vals):
            vals = vals[:n]
        d["args"] = vals
    return d


def _common(p: argparse.ArgumentParser, *, kinds: Sequence[str] = (),
            filters: bool = True, duration: bool = True) -> None:
    g = p.add_argument_group("common options")
    if filters:
        g.add_argument("-p", "--pid", type=_pid, help="only this process (thread group) id")
        g.add_argument("-c", "--comm", type=_comm,
                       help="only processes with this command name (15 bytes at most)")
    if duration:
        g.add_argument("-d", "--duration", type=_seconds, metavar="SECONDS",
                       help="stop after this many seconds (default: until Ctrl-C/SIGTERM)")
    g.add_argument("--json", action="store_true",
                   help="JSON lines on stdout (one per event/row), nothing else on stdout")
    if kinds:
        g.add_argument("-k", "--kind", choices=list(kinds),
                       help="the probe kind to use instead of the automatic choice")
    g.add_argument("--debug", action="store_true",
                   help="log what pytracers does and show tracebacks on errors")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (usage is one --help away)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (hint: {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


# --------------------------------------------------------------------------------------
# exec

EXEC_COLUMNS = [
    Column("TIME", 8, lambda r: r["_clock"].hms(r["ts_ns"])),
    Column("PCOMM", 16, lambda r: r["comm"]),
    Column("PID", 7, lambda r: r["pid"], right=True),
    Column("PPID", 7, lambda r: r["ppid"], right=True),
    Column("UID", 5, lambda r: r.get("uid"), right=True),
    Column("RET", 4, lambda r: r.get("ret"), right=True),
    Column("ARGS", 0, lambda r: _exec_args(r)),
]


def _exec_args(r: Mapping[str, Any]) -> str:
    args = [a for a in r.get("args", []) if a]
    words = [r.get("filename") or (args[0] if args else "")] + args[1:]
    return " ".join(shlex.quote(w) if w else "''" for w in words)


def _open_exec(args: argparse.Namespace) -> Source:
    tracers = _tracers_module()
    if tracers is not None and hasattr(tracers, "ExecTracer"):
        kw: Dict[str, Any] = {}
        if args.pid:
            kw["pid"] = args.pid
        if args.comm:
            kw["comm"] = args.comm
        t = tracers.ExecTracer(**kw)
        src = TracerSource(t, "syscalls:sys_enter_execve + sys_exit_execve")
        src.kind = src.kind or "tp"
        return src
    import pytracers
    o = pytracers.open(pytracers.object_path("exec"))
    try:
        if args.pid:
            o.config["cfg_pid"] = args.pid
        if args.comm:
            o.config["cfg_comm"] = args.comm
    except BaseException:
        o.close()
        raise
    obj = o.load()
    try:
        obj.programs["exec_enter"].attach()
        obj.programs["exec_exit"].attach()
        ring = obj.ring_buffer(event="exec_event")
    except BaseException:
        obj.close()
        raise
    return ObjectSource(obj, ring, "tp", "syscalls:sys_enter_execve + sys_exit_execve",
                        "stable tracepoints on both sides of execve give the file name, "
                        "arguments and result")


def _tracers_module() -> Any:
    try:
        return importlib.import_module("pytracers.tracers")
    except ImportError as e:
        log.debug("pytracers.tracers unavailable (%s): using the shipped objects directly", e)
        return None


def cmd_exec(args: argparse.Namespace) -> int:
    need_bpf_privileges()
    clock = Clock()
    out = Output(args.json, EXEC_COLUMNS)
    with Stopper() as stopper:
        src = _open_exec(args)
        note(f"exec: tracing with {src.kind} on {src.target}"
             + (f" ({src.why})" if src.why else "")
             + ("; failed execs included" if args.failed else "")
             + "; Ctrl-C to stop")

        def on_event(rec: Any) -> None:
            d = _record_dict(rec)
            if not args.failed and d.get("ret", 0) != 0:
                return
            if args.json:
                d = {"event": "exec", "time": round(clock.wall(d["ts_ns"]), 6), **d}
                out.row(d)
            else:
                d["_clock"] = clock
                out.row(d)

        if not args.json:
            out.header()
            out.flush()
        return run_events(src, out, stopper, args.duration, on_event, what="exec")


# --------------------------------------------------------------------------------------
# list

def _tracepoint_kinds(category: str, name: str, btf: Any) -> Tuple[List[str], str]:
    """Which kinds reach a tracefs event, and a note on the others."""
    if category == "syscalls":
        which = "sys_enter" if name.startswith("sys_enter") else "sys_exit"
        return ["tp"], f"raw_tp/tp_btf: only via {which} (all syscalls, filter by id)"
    kinds = ["tp", "raw_tp"]
    note_ = ""
    if btf is not None:
        if btf.has(f"btf_trace_{name}", "typedef"):
            kinds.append("tp_btf")
        else:
            note_ = f"tp_btf: no btf_trace_{name} in the kernel BTF"
    return kinds, note_


def cmd_list_tracepoints(args: argparse.Namespace) -> int:
    from . import tracefs
    names = tracefs.list_tracepoints(args.glob)
    if not names:
        raise CliError(f"no tracepoint matches {args.glob!r}", EXIT_NOT_FOUND,
                       f"globs match 'category:name' or 'name', e.g. '{PROG} list "
                       "tracepoints \"sched:*\"'")
    btf = _vmlinux_btf()
    rows = []
    for full in names:
        cat, _, name = full.partition(":")
        kinds, extra = _tracepoint_kinds(cat, name, btf)
        rows.append((full, cat, name, kinds, extra))
    if args.json:
        for full, cat, name, kinds, extra in rows:
            d: Dict[str, Any] = {"tracepoint": full, "category": cat, "name": name,
                                 "kinds": kinds}
            if extra:
                d["note"] = extra
            sys.stdout.write(dumps(d) + "\n")
    else:
        print_table([(full, ",".join(kinds), extra) for full, _, _, kinds, extra in rows],
                    ["TRACEPOINT", "KINDS", "NOTE"])
    note(f"{len(rows)} tracepoint{'s' if len(rows) != 1 else ''} match {args.glob!r}")
    return EXIT_OK


def _vmlinux_btf() -> Any:
    try:
        from .btf import Btf
        return Btf.vmlinux()
    except Exception as e:          # no BTF: still list, without the tp_btf column
        log.debug("no vmlinux BTF: %s", e)
        return None


def cmd_list_functions(args: argparse.Namespace) -> int:
    features = _optional_module("pytracers.features", "the feature prober")
    btf = _vmlinux_btf()
    if btf is None:
        raise E.NotSupportedError("BTF", "the kernel exposes no /sys/kernel/btf/vmlinux",
                                  min_kernel="5.2", hint="build with CONFIG_DEBUG_INFO_BTF=y")
    names = btf.functions(args.glob)
    if not names:
        sugg = btf.suggest(args.glob.strip("*?[]"), kind="func") if args.glob else []
        raise CliError(f"no kernel function matches {args.glob!r}"
                       + (f"; did you mean: {', '.join(sugg)}?" if sugg else ""),
                       EXIT_NOT_FOUND, "globs are shell-style, e.g. 'do_sys_*'")
    limit = args.limit
    shown = names if not limit else names[:limit]
    kinds = [k for k in ("fentry", "kprobe") if not args.kind or k == args.kind]
    rows = []
    for fn in shown:
        answers = {}
        for k in kinds:
            a = features.can_attach(fn, k)
            answers[k] = (bool(a), _reason_of(a))
        rows.append((fn, answers))
    if args.json:
        for fn, answers in rows:
            sys.stdout.write(dumps({"function": fn, **{
                k: {"ok": ok, "reason": why} for k, (ok, why) in answers.items()}}) + "\n")
    else:
        table = []
        for fn, answers in rows:
            cells: List[Any] = [fn]
            reasons = []
            for k in kinds:
                ok, why = answers[k]
                cells.append("yes" if ok else "no")
                if not ok and why and why not in reasons:
                    reasons.append(why)
            cells.append("; ".join(reasons))
            table.append(cells)
        print_table(table, ["FUNCTION", *[k.upper() for k in kinds], "WHY NOT"])
    more = f" (showing {len(shown)}; --limit 0 shows all)" if len(shown) < len(names) else ""
    note(f"{len(names)} function{'s' if len(names) != 1 else ''} match {args.glob!r}{more}")
    return EXIT_OK


def _reason_of(answer: Any) -> str:
    for attr in ("reason", "why", "detail"):
        v = getattr(answer, attr, None)
        if v:
            return str(v)
    return ""


# --------------------------------------------------------------------------------------
# doctor, trace, syscalls: driven by the feature prober and the tracers

def cmd_doctor(args: argparse.Namespace) -> int:
    features = _optional_module("pytracers.features", "the feature prober")
    report = features.probe()
    rows = _report_rows(report)
    if args.json:
        for r in rows:
            sys.stdout.write(dumps(r) + "\n")
        return EXIT_OK
    print_table([(r["feature"], "yes" if r["available"] else "no",
                  r.get("reason") or "", r.get("fix") or "") for r in rows],
                ["FEATURE", "OK", "REASON", "FIX"])
    return EXIT_OK


def _report_rows(report: Any) -> List[Dict[str, Any]]:
    """The prober's report as rows {feature, available, reason, fix, ...}."""
    items: Iterable[Tuple[str, Any]]
    if hasattr(report, "items"):
        items = report.items()
    else:
        items = [(getattr(a, "feature", getattr(a, "name", "?")), a) for a in report]
    rows = []
    for name, a in items:
        if isinstance(a, Mapping):
            get = a.get
        else:
            def get(k: str, default: Any = None, _a: Any = a) -> Any:
                return getattr(_a, k, default)
        ok = get("available", get("supported", get("ok", None)))
        if ok is None:
            ok = bool(a)
        row: Dict[str, Any] = {"feature": str(name), "available": bool(ok),
                               "reason": get("reason", "") or "",
                               "fix": get("hint", get("fix", "")) or ""}
        mk = get("min_kernel", None)
        if mk:
            row["min_kernel"] = mk
        rows.append(row)
    return rows


def cmd_trace(args: argparse.Namespace) -> int:
    raise CliError("trace is not wired yet", EXIT_NOT_SUPPORTED)


def cmd_syscalls(args: argparse.Namespace) -> int:
    raise CliError("syscalls is not wired yet", EXIT_NOT_SUPPORTED)


# --------------------------------------------------------------------------------------
# agent (pytracers.agent provides main(args))

def _agent_module() -> Any:
    return _optional_module("pytracers.agent", "the monitoring agent")


def cmd_agent(args: argparse.Namespace) -> int:
    agent = _agent_module()
    rc = agent.main(args)
    return int(rc or 0)


def _listen(value: str) -> Tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return (host.strip("[]") or "0.0.0.0", int(port))


# --------------------------------------------------------------------------------------
# the parser

def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Trace the Linux kernel with precompiled eBPF: "
                "which probe kinds this kernel has, and tracers that pick the right one.",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import __version__
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(name: str, help_: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                              **kw)

    d = add("doctor", "what this kernel supports, with the reason for each no and the fix")
    _common(d, filters=False, duration=False)
    d.set_defaults(func=cmd_doctor)

    lp = add("list", "list tracepoints or kernel functions matching a glob")
    lsub = lp.add_subparsers(dest="what", metavar="WHAT", parser_class=_Parser)
    lsub.required = True
    lt = lsub.add_parser("tracepoints", help="tracepoints (category:name) and the kinds that "
                         "reach them", epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    lt.add_argument("glob", nargs="?", default="*", metavar="GLOB",
                    help="shell-style pattern on 'category:name' or 'name' (default: *)")
    _common(lt, filters=False, duration=False)
    lt.set_defaults(func=cmd_list_tracepoints, command="list tracepoints")
    lf = lsub.add_parser("functions", help="kernel functions (from BTF) and which kinds can "
                         "attach: fentry? kprobe? inlined/notrace?", epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    lf.add_argument("glob", metavar="GLOB", help="shell-style pattern, e.g. 'do_sys_*'")
    lf.add_argument("--limit", type=int, default=50,
                    help="check at most this many matches (default 50; 0: all)")
    _common(lf, filters=False, duration=False, kinds=("fentry", "kprobe"))
    lf.set_defaults(func=cmd_list_functions, command="list functions")

    t = add("trace", "trace a kernel function or a syscall; the probe kind is chosen for you")
    t.add_argument("target", metavar="[KIND:]TARGET",
                   help="a kernel function (do_unlinkat), a syscall (syscall:openat), or "
                        f"KIND:TARGET with KIND one of {', '.join(ALL_KINDS)} "
                        "(tp/raw_tp/tp_btf take a syscall name)")
    _common(t, kinds=ALL_KINDS)
    t.set_defaults(func=cmd_trace)

    x = add("exec", "trace process executions (like execsnoop)")
    x.add_argument("-x", "--failed", action="store_true",
                   help="also show execs that failed (RET is -errno)")
    _common(x)
    x.set_defaults(func=cmd_exec)

    s = add("syscalls", "live syscall counts and latency per syscall and process")
    s.add_argument("-i", "--interval", type=_seconds, default=None, metavar="SECONDS",
                   help="print the table every SECONDS (default: only at the end)")
    s.add_argument("-n", "--top", type=int, default=20,
                   help="rows to print per table (default 20; 0: all)")
    s.add_argument("-s", "--syscall", action="append", metavar="NAME",
                   help="only this syscall (repeatable)")
    _common(s, kinds=SYSCALL_KINDS)
    s.set_defaults(func=cmd_syscalls)

    a = add("agent", "serve Prometheus metrics (exec counts, syscall counts and latency, "
            "lost events) over HTTP")
    a.add_argument("--listen", type=_listen, default=("127.0.0.1", 9435), metavar="HOST:PORT",
                   help="address to serve /metrics on (default 127.0.0.1:9435)")
    _common(a, duration=True)
    a.set_defaults(func=cmd_agent)
    if argv and "agent" in argv[:1]:
        # pytracers.agent may add options of its own.
        try:
            mod = importlib.import_module("pytracers.agent")
        except ImportError:
            mod = None
        add_args = getattr(mod, "add_arguments", None)
        if callable(add_args):
            add_args(a)
    return p


def _configure_logging(debug: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format=f"{PROG}: %(levelname)s: %(name)s: %(message)s",
                        stream=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:                       # --help, --version, usage errors
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    _configure_logging(debug)
    command = str(getattr(args, "command", "") or "")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"{PROG} {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK
    except Exception as exc:
        return _report_error(exc, command, debug)
