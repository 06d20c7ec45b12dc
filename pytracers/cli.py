"""The ``pytracers`` command line (also ``python -m pytracers``).

Subcommands::

    pytracers doctor [--json]                 what this kernel can do, and why not
    pytracers list tracepoints GLOB           tracepoints, and which kinds reach them
    pytracers list functions GLOB             kernel functions, and which kinds can attach
    pytracers trace [KIND:]TARGET             a kernel function, syscall or tracepoint, kind chosen
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
import re
import shlex
import signal
import sys
import time
from types import FrameType
from typing import (Any, Callable, Dict, Iterable, List, Mapping, NoReturn, Optional,
                    Sequence, Set, TextIO, Tuple)

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
        stem = _glob_stem(exc.name)
        if "function" in exc.kind:
            hint = f"search with: {PROG} list functions '*{stem}*'"
        elif "tracepoint" in exc.kind:
            hint = f"search with: {PROG} list tracepoints '*{stem}*'"
        elif "syscall" in exc.kind:
            hint = f"search with: {PROG} list tracepoints 'sys_enter_*{stem}*'"
        else:
            hint = f"check the name; {PROG} {command or 'COMMAND'} --help"
        return EXIT_NOT_FOUND, msg, hint
    if isinstance(exc, E.NotSupportedError):
        older = exc.min_kernel and _kernel_older_than(exc.min_kernel)
        msg, _ = _one_line(f"{exc.feature} is not supported by this kernel: {exc.reason}"
                           + (f" (first available in Linux {exc.min_kernel})" if older else ""))
        hint = _cli_words(exc.hint) if exc.hint else \
            f"`{PROG} doctor` shows what this kernel supports"
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


def _glob_stem(name: str) -> str:
    """A piece of a mistyped name worth searching for: the start of its
    longest word ("no_such_function_xyz" -> "funct", "do_unlinkatt" -> "unlin")."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", name.split(":")[-1]) if w]
    return max(words, key=len)[:5] if words else ""


def _kernel_older_than(version: str) -> bool:
    def nums(v: str) -> Tuple[int, ...]:
        out = []
        for part in v.split(".")[:2]:
            digits = "".join(c for c in part if c.isdigit()) or "0"
            out.append(int(digits))
        return tuple(out)
    return nums(os.uname().release) < nums(version)


def _cli_words(hint: str) -> str:
    """A library hint in command-line terms: kind='kprobe' -> --kind kprobe."""
    return re.sub(r"\bkind='(\w+)'", r"--kind \1", hint)


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
               on_event: Callable[[Any], None], *, what: str, ready: str,
               tick: Optional[Tuple[float, Callable[[], None]]] = None,
               at_end: Optional[Callable[[], None]] = None,
               counted: Optional[Callable[[], int]] = None, seen_word: str = "event") -> int:
    """The event loop shared by every streaming command.  It owns ``source``
    from the start: prints the header (human mode) and then ``ready`` on
    stderr, polls until the duration ends, a signal arrives or stdout closes;
    then detaches, and prints the summary (events seen and lost) on stderr."""
    start = time.monotonic()
    seen_count = counted
    seen = [0]

    def deliver(ev: Any) -> None:
        seen[0] += 1
        on_event(ev)

    lost: Optional[int] = None
    elapsed = 0.0
    try:
        try:
            out.header()
            out.flush()
            note(ready + "; Ctrl-C to stop")
            start = time.monotonic()
            deadline = None if not duration else start + duration
            next_tick = None if tick is None else start + tick[0]
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
            if at_end is not None:
                at_end()
            out.flush()
        except BrokenPipeError:
            stopper.stop("stdout closed")
            _silence_stdout()
        elapsed = time.monotonic() - start
        lost = source.lost
    finally:
        source.close()
    reason = stopper.reason or "stopped"
    n_seen = seen[0] if seen_count is None else seen_count()
    shown = "" if out.rows == n_seen or not out.columns else f", {out.rows} shown"
    if seen_count is None:
        note(f"{what}: {n_seen} event{'s' if n_seen != 1 else ''} seen{shown}, {lost} lost "
             f"in {elapsed:.1f} s ({reason}); probes detached")
    else:
        note(f"{what}: {n_seen} {seen_word}{'s' if n_seen != 1 else ''} counted in the kernel, "
             f"{lost} not counted in {elapsed:.1f} s ({reason}); probes detached")
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


def _common(p: argparse.ArgumentParser, *, kinds: Sequence[str] = (),
            filters: bool = True, duration: bool = True, json_lines: bool = True) -> None:
    g = p.add_argument_group("common options")
    if filters:
        g.add_argument("-p", "--pid", type=_pid, help="only this process (thread group) id")
        g.add_argument("-c", "--comm", type=_comm,
                       help="only processes with this command name (15 bytes at most)")
    if duration:
        g.add_argument("-d", "--duration", type=_seconds, metavar="SECONDS",
                       help="stop after this many seconds (default: until Ctrl-C/SIGTERM)")
    if json_lines:
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
    Column("TIME", 8, lambda d: _hms(d)),
    Column("PCOMM", 16, lambda d: d.get("comm")),
    Column("PID", 7, lambda d: d.get("pid"), right=True),
    Column("PPID", 7, lambda d: d.get("ppid"), right=True),
    Column("UID", 5, lambda d: d.get("uid"), right=True),
    Column("RET", 4, lambda d: d.get("ret"), right=True),
    Column("ARGS", 0, lambda d: _exec_args(d)),
]
EXEC_KINDS = ("tp", "tp_btf")


def _exec_args(d: Mapping[str, Any]) -> str:
    """The command line: the file run, then argv[1:], shell-quoted; " ..." when
    the record could not hold all of it."""
    args = list(d.get("args") or [])
    words = [d.get("filename") or (args[0] if args else "")] + args[1:]
    line = " ".join(shlex.quote(w) for w in words)
    return line + " ..." if d.get("args_truncated") else line


def _open_exec(args: argparse.Namespace) -> Source:
    """tp (default): ExecTracer on the execve tracepoints -- arguments, uid,
    failed execs.  tp_btf: ProcessTracer's sched_process_exec -- successful
    execs only, no arguments, but the kernel's own view of the file run."""
    kw = _tracer_options(args)
    if args.kind == "tp_btf":
        from .tracers.process import ProcessTracer
        t = ProcessTracer(events=("exec",), **kw)
        if args.failed:
            note("exec: --failed has no effect with tp_btf (sched_process_exec fires only "
                 "for execs that succeeded)")
        return TracerSource(t, "sched:sched_process_exec")
    from .tracers import ExecTracer
    return TracerSource(ExecTracer(**kw), "syscalls:sys_enter_execve + sys_exit_execve")


def cmd_exec(args: argparse.Namespace) -> int:
    need_bpf_privileges()
    clock = Clock()
    out = Output(args.json, EXEC_COLUMNS)
    with Stopper() as stopper:
        src = _open_exec(args)

        def on_event(rec: Any) -> None:
            d = event_dict(rec)
            if not args.failed and d.get("ret", 0) != 0:
                return
            d = {"event": "exec", "time": round(clock.wall(d["ts_ns"]), 6), **d}
            out.row(d)

        ready = (f"exec: {src.target} with {src.kind}" + (f": {src.why}" if src.why else "")
                 + ("; failed execs included" if args.failed else ""))
        return run_events(src, out, stopper, args.duration, on_event, what="exec", ready=ready)


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
        stem = args.glob.strip("*?[]")
        sugg = btf.suggest(stem, kind="func") if stem else []
        raise CliError(f"no kernel function matches {args.glob!r}"
                       + (f"; did you mean: {', '.join(sugg)}?" if sugg else ""),
                       EXIT_NOT_FOUND, f"globs are shell-style: {PROG} list functions "
                       f"'*{stem[:6]}*'")
    shown = names if not args.limit else names[:args.limit]
    kinds = [args.kind] if args.kind else ["fentry", "kprobe"]
    # A kind this kernel lacks altogether is said once, not on every row.
    kernel_no: Dict[str, str] = {}
    for k in kinds:
        f = features.probe_one(k)
        if not f.supported:
            kernel_no[k] = f.reason + (f" (fix: {f.fix})" if f.fix else "")
    syms = features.kallsyms_functions()
    sites = features.filter_functions()
    blacklist = features.kprobe_blacklist()
    rows: List[Dict[str, Any]] = []
    for fn in shown:
        row: Dict[str, Any] = {"function": fn}
        for k in kinds:
            if k in kernel_no:
                row[k] = {"ok": False, "reason": f"{k} is not available on this kernel: "
                          f"{kernel_no[k]}"}
            else:
                a = features.can_attach(k, fn)
                row[k] = {"ok": bool(a.supported), "reason": a.reason}
        row["symbol"] = _symbol_notes(fn, syms, sites, blacklist)
        rows.append(row)
    if args.json:
        for row in rows:
            sys.stdout.write(dumps(row) + "\n")
    else:
        table = []
        for row in rows:
            cells: List[Any] = [row["function"]]
            why = []
            for k in kinds:
                ok = row[k]["ok"]
                cells.append("yes" if ok else ("no*" if k in kernel_no else "no"))
                if not ok and k not in kernel_no:
                    why.append(f"{k}: {row[k]['reason']}")
            cells.append(", ".join(row["symbol"]) or "-")
            cells.append("; ".join(why))
            table.append(cells)
        print_table(table, ["FUNCTION", *[k.upper() for k in kinds], "SYMBOL", "WHY NOT"])
    for k, reason in kernel_no.items():
        note(f"no*: {k} is not available on this kernel: {reason}")
    more = (f" (showing the first {len(shown)}; --limit 0 shows all)"
            if len(shown) < len(names) else "")
    note(f"{len(names)} function{'s' if len(names) != 1 else ''} match {args.glob!r}{more}")
    return EXIT_OK


def _symbol_notes(fn: str, syms: Optional[Set[str]], sites: Optional[Set[str]],
                  blacklist: Optional[Set[str]]) -> List[str]:
    """What the kernel's own lists say about a function (BTF has it: it is listed)."""
    out = []
    if syms is not None:
        out.append("kallsyms" if fn in syms else "inlined (not in kallsyms)")
    if sites is not None:
        out.append("ftrace site" if fn in sites else "notrace (no ftrace site)")
    if blacklist is not None and fn in blacklist:
        out.append("kprobe-blacklisted")
    return out


# --------------------------------------------------------------------------------------
# doctor

def cmd_doctor(args: argparse.Namespace) -> int:
    features = _optional_module("pytracers.features", "the feature prober")
    report = features.probe()
    rows = [_feature_row(f) for f in report]
    if args.json:
        for r in rows:
            sys.stdout.write(dumps(r) + "\n")
    else:
        print_table([(r["feature"], "yes" if r["available"] else
                      ("no" if r["conclusive"] else "?"), r["reason"], r["fix"] or "")
                     for r in rows], ["FEATURE", "OK", "REASON", "FIX"])
    from ._errmap import missing_bpf_caps
    cap = missing_bpf_caps(tracing=True)
    tail = (f"; not privileged (needs {cap}): answers marked ? are inconclusive, run as root"
            if cap else "")
    note(f"kernel {report.kernel}, probed in {report.seconds * 1000:.0f} ms{tail}")
    return EXIT_OK


def _feature_row(f: Any) -> Dict[str, Any]:
    return {"feature": f.name, "available": bool(f.supported), "reason": f.reason or "",
            "fix": f.fix or None, "conclusive": bool(f.conclusive),
            "min_kernel": f.min_kernel}


# --------------------------------------------------------------------------------------
# events of the tracers: JSON and columns

def event_dict(rec: Any) -> Dict[str, Any]:
    """A tracer record as a JSON-ready dict: its fields, with the computed
    attributes of the record class (name, args, ret, latency_ns, argv, ...)
    in place of the raw ones; private and bookkeeping fields dropped."""
    d: Dict[str, Any] = dict(rec._asdict()) if hasattr(rec, "_asdict") else dict(rec)
    cls = type(rec)
    for attr in dir(cls):
        if not attr.startswith("_") and isinstance(getattr(cls, attr, None), property):
            d[attr] = getattr(rec, attr)
    for k in ("flags", "raw_args"):
        d.pop(k, None)
    if "argv" in d:                                  # exec: argv replaces the packed argbuf
        d["args"] = d.pop("argv")
        d["args_truncated"] = d.pop("args_truncated", False)
        for k in ("argbuf", "argbuf_len"):
            d.pop(k, None)
    argn = [k for k in d if k.startswith("arg") and k[3:].isdigit()]
    if argn and "args" not in d:
        vals = [d.pop(k) for k in sorted(argn, key=lambda k: int(k[3:]))]
        n = d.get("argc")
        d["args"] = vals[:n] if isinstance(n, int) else vals
    for k in argn + ["argc"]:
        d.pop(k, None)
    return {k: _jsonable(v) for k, v in d.items() if not k.startswith("_")}


def _value(v: Any, ret: bool = False) -> str:
    """An integer as people read kernel values: addresses in hex, and a
    return value of -errno by its name."""
    if isinstance(v, bool) or not isinstance(v, int):
        return _text(v)
    if ret and -4095 <= v < 0 and -v in _errno.errorcode:
        return f"-{_errno.errorcode[-v]}"
    if v >= 1 << 32 or v < -(1 << 40):
        return hex(v & 0xFFFFFFFFFFFFFFFF)
    return str(v)


def _args_text(args: Any) -> str:
    if args is None:
        return ""
    if isinstance(args, Mapping):
        return " ".join(f"{k}={_value(v)}" for k, v in args.items())
    if isinstance(args, (list, tuple)):
        return " ".join(_value(v) for v in args)
    return str(args)


def _lat_us(d: Mapping[str, Any]) -> Any:
    ns = d.get("latency_ns")
    return None if ns is None else f"{ns / 1000:.1f}"


def _hms(d: Mapping[str, Any]) -> str:
    return time.strftime("%H:%M:%S", time.localtime(d["time"]))


FUNCTION_COLUMNS = [
    Column("TIME", 8, _hms),
    Column("PCOMM", 16, lambda d: d.get("comm")),
    Column("PID", 7, lambda d: d.get("pid"), right=True),
    Column("TID", 7, lambda d: d.get("tid"), right=True),
    Column("LAT(us)", 9, _lat_us, right=True),
    Column("RET", 10, lambda d: _value(d.get("ret"), ret=True), right=True),
    Column("FUNCTION", 24, lambda d: d.get("name")),
    Column("ARGS", 0, lambda d: _args_text(d.get("args"))),
]
SYSCALL_COLUMNS = [
    Column("TIME", 8, _hms),
    Column("PCOMM", 16, lambda d: d.get("comm")),
    Column("PID", 7, lambda d: d.get("pid"), right=True),
    Column("TID", 7, lambda d: d.get("tid"), right=True),
    Column("SYSCALL", 16, lambda d: d.get("name")),
    Column("LAT(us)", 9, _lat_us, right=True),
    Column("RET", 10, lambda d: _value(d.get("ret"), ret=True), right=True),
    Column("ARGS", 0, lambda d: _args_text(d.get("args"))),
]
PROCESS_COLUMNS = [
    Column("TIME", 8, _hms),
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


# --------------------------------------------------------------------------------------
# trace

PROCESS_EVENTS = {"sched_process_exec": "exec", "sched_process_fork": "fork",
                  "sched_process_exit": "exit"}


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
            return Target("syscall", _split_names(rest), _syscall_kind(kind, spec))
        if prefix == "syscalls":                       # the tracefs name of one
            name = rest
            for p in ("sys_enter_", "sys_exit_"):
                if name.startswith(p):
                    name = name[len(p):]
            return Target("syscall", [name], _syscall_kind(kind, spec))
        if prefix == "sched" and rest in PROCESS_EVENTS and kind != "tp":
            if kind not in (None, "tp_btf"):
                raise CliError(f"{spec} is traced with tp_btf or tp, not {kind}",
                               EXIT_NOT_SUPPORTED,
                               f"use tp_btf:{rest} (the process tracer) or tp:{spec} (the "
                               "tracepoint's own fields)")
            return Target("process", [PROCESS_EVENTS[rest]], "tp_btf")
        # any other tracepoint: the tracepoint tracer, kind tp
        if kind not in (None, "tp"):
            raise CliError(f"tracepoint {spec} is traced with tp, not {kind}: raw_tp and "
                           "tp_btf hand over the kernel's own arguments, not the record its "
                           "format file describes", EXIT_NOT_SUPPORTED, f"use tp:{spec}")
        from .tracers.tracepoint import split_tracepoint_name
        try:
            split_tracepoint_name(spec)
        except E.BadArgumentError as e:
            raise CliError(str(e), EXIT_USAGE, f"e.g. {PROG} trace sched:sched_switch; "
                           f"{PROG} list tracepoints GLOB") from None
        return Target("tracepoint", [spec], kind)
    if spec in PROCESS_EVENTS and kind == "tp_btf":
        return Target("process", [PROCESS_EVENTS[spec]], kind)
    if kind in SYSCALL_KINDS:
        return Target("syscall", _split_names(spec), kind)
    if any(c in spec for c in "*?[") and kind in (None, "kprobe_multi"):
        return Target("function", [spec], "kprobe_multi")
    return Target("function", [spec], kind)


def _split_names(text: str) -> List[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise CliError("no syscall named", EXIT_USAGE, f"e.g. {PROG} trace syscall:openat")
    return names


def _syscall_kind(kind: Optional[str], spec: str) -> Optional[str]:
    if kind is not None and kind not in SYSCALL_KINDS:
        raise CliError(f"syscall target {spec} cannot be traced with {kind}: syscalls are "
                       f"traced with {', '.join(SYSCALL_KINDS)}", EXIT_NOT_SUPPORTED,
                       f"trace the kernel function instead, e.g. {kind}:__x64_sys_NAME")
    return kind


def _tracer_options(args: argparse.Namespace, **extra: Any) -> Dict[str, Any]:
    kw: Dict[str, Any] = dict(extra)
    if getattr(args, "pid", None):
        kw["pid"] = args.pid
    if getattr(args, "comm", None):
        kw["comm"] = args.comm
    return kw


# Batch wakeups: the CLI's own syscalls (reading the ring, writing stdout)
# must not wake it once per event, or tracing e.g. write(2) would feed itself.
WAKEUP_BYTES = 64 * 1024
LATENCY = 0.1


def _is_syscall(name: str) -> bool:
    try:
        from .tracers.syscalls import syscall_number
        syscall_number(name)
        return True
    except (E.TargetNotFoundError, E.BadArgumentError, ImportError):
        return False


def open_trace(target: Target, args: argparse.Namespace) -> Tuple[Source, str]:
    """Start the tracer for a target; (source, what to say on stderr about the choice)."""
    import pytracers
    kw = _tracer_options(args, wakeup_bytes=WAKEUP_BYTES, latency=LATENCY)
    t: Any
    if target.what == "process":
        from .tracers.process import ProcessTracer
        t = ProcessTracer(events=target.names, **kw)
        return TracerSource(t, f"sched:sched_process_{target.label}"), ""
    if target.what == "tracepoint":
        t = pytracers.trace_tracepoint(target.names[0], kind=target.kind, **kw)
        return TracerSource(t, target.names[0]), ""
    if getattr(args, "no_latency", False):
        kw["measure_latency"] = False
    if target.what == "syscall":
        t = pytracers.trace_syscall(target.names, kind=target.kind, **kw)
        return TracerSource(t, f"syscall {target.label}"), ""
    name = target.names[0]
    stable = bool(getattr(args, "stable", False))
    try:
        t = pytracers.trace_function(name, kind=target.kind, stable=stable, **kw)
    except E.TargetNotFoundError:
        if target.kind is None and not stable and _is_syscall(name):
            t = pytracers.trace_syscall(name, **kw)
            return (TracerSource(t, f"syscall {name}"),
                    f"{name} is not a kernel function but a syscall; ")
        raise
    except E.NotSupportedError as e:
        if target.kind is not None or stable:
            raise
        # Neither fentry nor kprobe: point at what does work, in CLI terms.
        from .choose import stable_tracepoints
        alt = stable_tracepoints(name)
        if alt:
            hint = (f"`{PROG} trace --stable {name}` traces the syscall "
                    f"tracepoint{'s' if len(alt) > 1 else ''} of {', '.join(alt)} instead")
        else:
            hint = (f"syscall tracepoints may work here (`{PROG} trace syscall:NAME`); "
                    f"`{PROG} doctor` shows what this kernel supports")
        raise CliError(_one_line(f"{e.feature} is not supported by this kernel: "
                                 f"{e.reason}")[0], EXIT_NOT_SUPPORTED, hint) from e
    return TracerSource(t, name), ""


def cmd_trace(args: argparse.Namespace) -> int:
    target = parse_target(args.target, args.kind)
    need_bpf_privileges()
    with Stopper() as stopper:
        src, prefix = open_trace(target, args)
        if target.what == "tracepoint":
            return _run_tracepoint(src, args, stopper)
        columns = {"function": FUNCTION_COLUMNS, "syscall": SYSCALL_COLUMNS,
                   "process": PROCESS_COLUMNS}[target.what]
        if src.kind in ("tp", "raw_tp", "tp_btf") and target.what == "function":
            columns = SYSCALL_COLUMNS                   # stable=True traced the syscalls
        label = "syscall" if columns is SYSCALL_COLUMNS else target.what
        out = Output(args.json, columns)
        clock = Clock()
        me = os.getpid()

        def on_event(rec: Any) -> None:
            d = event_dict(rec)
            if d.get("pid") == me:                   # the CLI itself is never the story
                return
            d = {"event": d.get("event", label), "time": round(clock.wall(d["ts_ns"]), 6), **d}
            out.row(d)

        ready = f"trace: {prefix}{src.target} with {src.kind}: {_cli_words(src.why)}"
        return run_events(src, out, stopper, args.duration, on_event, what="trace",
                          ready=ready)


TRACEPOINT_COLUMNS = [
    Column("TIME", 8, _hms),
    Column("PCOMM", 16, lambda d: d.get("comm")),
    Column("PID", 7, lambda d: d.get("pid"), right=True),
    Column("TID", 7, lambda d: d.get("tid"), right=True),
    Column("CPU", 3, lambda d: d.get("cpu"), right=True),
    Column("FIELDS", 0, lambda d: d["_text"]),
]
_PLAIN_WORD = re.compile(r"[^\s\"'=\\]+")


def _field_text(v: Any, pointer: bool) -> str:
    """A tracepoint field's value on the human line: name=value."""
    if v is None:
        return "(truncated)"
    if isinstance(v, bool) or isinstance(v, float):
        return str(v)
    if isinstance(v, int):
        return hex(v & 0xFFFFFFFFFFFFFFFF) if pointer else str(v)
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex() or '""'
    if isinstance(v, tuple):
        return "[" + ",".join(_field_text(x, pointer) for x in v) + "]"
    text = str(v)
    return text if _PLAIN_WORD.fullmatch(text) else json.dumps(text)


def _field_json(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    if isinstance(v, tuple):
        return list(v)
    return v


def _run_tracepoint(src: Source, args: argparse.Namespace, stopper: Stopper) -> int:
    """`trace CATEGORY:NAME`: one line per event, the fields as name=value
    (or one JSON object per event, the fields under "fields")."""
    assert isinstance(src, TracerSource)
    tracer = src.tracer
    pointers = {f.name for f in tracer.fields if "*" in f.type}
    out = Output(args.json, TRACEPOINT_COLUMNS)
    clock = Clock()
    me = os.getpid()

    def on_event(rec: Any) -> None:
        if rec.pid == me:                            # the CLI itself is never the story
            return
        fields = rec.fields
        d: Dict[str, Any] = {"event": "tracepoint", "tracepoint": rec.tracepoint,
                             "time": round(clock.wall(rec.ts_ns), 6), "ts_ns": rec.ts_ns,
                             "pid": rec.pid, "tid": rec.tid, "cpu": rec.cpu, "comm": rec.comm,
                             "fields": {k: _field_json(v) for k, v in fields.items()}}
        if out.json:
            out.row(d)
            return
        d["_text"] = " ".join(f"{k}={_field_text(v, k in pointers)}"
                              for k, v in fields.items())
        out.row(d)

    ready = f"trace: {src.target} with {src.kind}: {_cli_words(src.why)}"
    rc = run_events(src, out, stopper, args.duration, on_event, what="trace", ready=ready)
    if tracer.truncated:
        note(f"trace: {tracer.truncated} field{'s' if tracer.truncated != 1 else ''} shown as "
             f"(truncated)/null: payload past the {tracer.copy_bytes} bytes copied per event")
    return rc


# --------------------------------------------------------------------------------------
# syscalls: counts and latency per syscall and process

class StatsSource(TracerSource):
    """A SyscallStats tracer seen as a Source: nothing to deliver per event
    (the kernel counts), so poll() only waits; ``lost`` is the calls the
    kernel could not count."""

    def poll(self, timeout: float, callback: Callable[[Any], Any]) -> int:
        if timeout > 0:
            time.sleep(timeout)
        return 0


class IntervalStats:
    """Per-interval rows from the kernel's cumulative counters: each row is
    the difference between two snapshots (calls, errors, total latency,
    histogram -- exact); ``max_ns`` is the largest latency since the start
    (a maximum cannot be subtracted)."""

    def __init__(self, exclude_pid: int) -> None:
        self.prev: Dict[Tuple[int, int], Any] = {}
        self.exclude = exclude_pid
        self.counted = 0

    def interval(self, snap: Dict[Tuple[int, int], Any]) -> List[Dict[str, Any]]:
        from .tracers.syscalls import percentile_of
        rows = []
        for key, st in snap.items():
            old = self.prev.get(key)
            calls = st.calls - (old.calls if old else 0)
            if calls <= 0 or st.pid == self.exclude:
                continue
            total = st.total_ns - (old.total_ns if old else 0)
            hist = st.hist if old is None else [a - b for a, b in zip(st.hist, old.hist)]
            rows.append({"syscall": st.name, "pid": st.pid, "comm": st.comm, "count": calls,
                         "errors": st.errors - (old.errors if old else 0),
                         "avg_ns": total // calls, "p50_ns": percentile_of(hist, 0.5),
                         "p99_ns": percentile_of(hist, 0.99), "max_ns": st.max_ns,
                         "total_ns": total})
            self.counted += calls
        self.prev = snap
        rows.sort(key=lambda r: (-r["count"], r["syscall"], r["pid"]))
        return rows


def _us(ns: Optional[int]) -> str:
    return "-" if ns is None else f"{ns / 1000:.1f}"


def open_syscalls(args: argparse.Namespace) -> StatsSource:
    from .tracers.syscalls import SyscallStats
    kw = _tracer_options(args)
    if getattr(args, "max_keys", None) is not None:
        if args.max_keys < 1:
            raise CliError("--max-keys must be at least 1", EXIT_USAGE)
        kw["max_keys"] = args.max_keys
    names = [n for s in (args.syscall or []) for n in _split_names(s)]
    if names:
        refused: List[str] = []
        for k in ([args.kind] if args.kind else ["tp", "tp_btf", "raw_tp"]):
            try:
                src = StatsSource(SyscallStats(names, kind=k, **kw), "syscalls " + ",".join(names))
            except E.NotSupportedError as e:
                if args.kind:
                    raise
                refused.append(f"{k} unavailable ({e.reason})")
                continue
            src.why = "; ".join(refused + [src.why])
            return src
        raise E.NotSupportedError("syscall statistics", "; ".join(refused))
    if args.kind == "tp":
        raise CliError("kind tp attaches one tracepoint pair per syscall, so it needs the "
                       "syscalls named", EXIT_USAGE,
                       "add -s NAME (repeatable), or use --kind tp_btf/raw_tp for all")
    refused = []
    for k in ([args.kind] if args.kind else ["tp_btf", "raw_tp"]):
        try:
            t = SyscallStats(None, kind=k, **kw)
        except E.NotSupportedError as e:
            if args.kind:
                raise
            refused.append(f"{k} unavailable ({e.reason})")
            continue
        src = StatsSource(t, "all syscalls")
        if args.kind:
            src.why = f"kind {k} requested. " + src.why
        else:
            src.why = "; ".join(refused + [src.why + " (every syscall is wanted here, so "
                                           "the per-call cost decides)"])
        return src
    raise E.NotSupportedError("syscall statistics", "; ".join(refused))


def cmd_syscalls(args: argparse.Namespace) -> int:
    need_bpf_privileges()
    stats = IntervalStats(os.getpid())
    out = Output(args.json)
    with Stopper() as stopper:
        src = open_syscalls(args)
        started = [time.time()]

        def flush_table() -> None:
            now = time.time()
            all_rows = stats.interval(src.tracer.snapshot())
            rows = all_rows[:args.top] if args.top else all_rows
            calls = sum(r["count"] for r in all_rows)
            span = now - started[0]
            if args.json:
                for r in rows:
                    out.row({"event": "syscall_stats", "time": round(now, 6),
                             "interval_s": round(span, 3), **r})
            else:
                out.stream.write(f"\n{time.strftime('%H:%M:%S', time.localtime(now))}  "
                                 f"{calls} syscalls in {span:.1f} s"
                                 + (f", top {len(rows)} of {len(all_rows)}"
                                    if len(rows) < len(all_rows) else "") + "\n")
                print_table([(r["syscall"], r["pid"], r["comm"], r["count"], r["errors"],
                              _us(r["avg_ns"]), _us(r["p50_ns"]), _us(r["p99_ns"]),
                              _us(r["max_ns"])) for r in rows],
                            ["SYSCALL", "PID", "COMM", "COUNT", "ERRORS", "AVG(us)",
                             "P50(us)", "P99(us)", "MAX(us)"],
                            stream=out.stream, right=(1, 3, 4, 5, 6, 7, 8))
            out.flush()
            started[0] = now

        def at_end() -> None:
            flush_table()

        tick = (args.interval, flush_table) if args.interval else None
        ready = f"syscalls: {src.target} with {src.kind}: {_cli_words(src.why)}"
        return run_events(src, out, stopper, args.duration, lambda ev: None, what="syscalls",
                          ready=ready, tick=tick, at_end=at_end,
                          counted=lambda: stats.counted, seen_word="call")


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
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
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

    t = add("trace", "trace a kernel function, a syscall or a tracepoint; the probe kind is "
            "chosen for you")
    t.add_argument("target", metavar="[KIND:]TARGET",
                   help="a kernel function (do_unlinkat), a syscall (syscall:openat), "
                        "any tracepoint CATEGORY:NAME (sched:sched_switch: its fields as "
                        "name=value, kind tp), or "
                        f"KIND:TARGET with KIND one of {', '.join(ALL_KINDS)} "
                        "(tp/raw_tp/tp_btf take a syscall name; kprobe_multi a glob); "
                        "sched:sched_process_exec|fork|exit use the process tracer (tp_btf), "
                        "tp:sched:sched_process_exec the tracepoint's own fields")
    t.add_argument("--stable", action="store_true",
                   help="trace the syscall tracepoints that stand in for a kernel function "
                        "(a stable interface) instead of the function itself")
    t.add_argument("--no-latency", dest="no_latency", action="store_true",
                   help="do not time the calls: one program per call, at exit (arguments "
                        "and return value), about half the cost on the traced path")
    _common(t, kinds=ALL_KINDS)
    t.set_defaults(func=cmd_trace)

    x = add("exec", "trace process executions (like execsnoop)")
    x.add_argument("-x", "--failed", action="store_true",
                   help="also show execs that failed (RET is -errno)")
    _common(x, kinds=EXEC_KINDS)
    x.set_defaults(func=cmd_exec)

    s = add("syscalls", "live syscall counts and latency per syscall and process, counted "
            "in the kernel (no call is lost to a slow reader)")
    s.add_argument("-i", "--interval", type=_seconds, default=None, metavar="SECONDS",
                   help="print the table every SECONDS (default: only at the end); MAX is "
                        "the largest latency since the start")
    s.add_argument("--max-keys", type=int, default=None, metavar="N",
                   help="(process, syscall) pairs the kernel keeps counters for; calls of "
                        "pairs beyond it are reported as not counted (default: what fits in "
                        "64 MiB for this machine's CPUs, at most 16384)")
    s.add_argument("-n", "--top", type=int, default=20,
                   help="rows to print per table (default 20; 0: all)")
    s.add_argument("-s", "--syscall", action="append", metavar="NAME",
                   help="only this syscall (repeatable)")
    _common(s, kinds=SYSCALL_KINDS)
    s.set_defaults(func=cmd_syscalls)

    a = add("agent", "serve Prometheus metrics (exec counts, syscall counts and latency, "
            "lost events) over HTTP")
    a.add_argument("--listen", type=_listen, default=("127.0.0.1", 9435), metavar="HOST:PORT",
                   help="address to serve /metrics on (default 127.0.0.1:9435; port 0: any free port)")
    _common(a, json_lines=False)      # the agent's output is its /metrics page
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
    if not debug:
        # libbpf's own messages are folded into the one-line errors (and some,
        # like its "try raising ulimit -l" guess, mislead); --debug shows them.
        logging.getLogger("pytracers.libbpf").setLevel(logging.CRITICAL)


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
