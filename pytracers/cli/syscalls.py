"""``pytracers syscalls``: live syscall counts and latency per syscall and
process, counted in the kernel (:class:`~pytracers.tracers.SyscallStats`)."""
from __future__ import annotations

import argparse
import os
import time
from typing import Any, Callable, Dict, List, Tuple

from ..kinds import TP
from .loop import Stopper, TracerSource, need_bpf_privileges, run_events
from .options import SYSCALL_KINDS, _seconds, common, split_names, subcommand, tracer_options
from .output import Output, print_table, us
from .status import EXIT_USAGE, CliError, cli_words


def add_command(sub: Any) -> None:
    s = subcommand(sub, "syscalls", "live syscall counts and latency per syscall and process, "
                                    "counted in the kernel (no call is lost to a slow reader)")
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
    common(s, kinds=SYSCALL_KINDS)
    s.set_defaults(func=cmd_syscalls)


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
        from ..tracers.syscalls import percentile_of
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


def open_syscalls(args: argparse.Namespace) -> StatsSource:
    """The counting tracer, its kind chosen by :func:`pytracers.choose.syscall_stats`."""
    from ..choose import syscall_stats
    kw = tracer_options(args)
    if getattr(args, "max_keys", None) is not None:
        if args.max_keys < 1:
            raise CliError("--max-keys must be at least 1", EXIT_USAGE)
        kw["max_keys"] = args.max_keys
    names = [n for s in (args.syscall or []) for n in split_names(s)]
    if names:
        return StatsSource(syscall_stats(names, kind=args.kind, **kw),
                           "syscalls " + ",".join(names))
    if args.kind == TP:
        raise CliError("kind tp attaches one tracepoint pair per syscall, so it needs the "
                       "syscalls named", EXIT_USAGE,
                       "add -s NAME (repeatable), or use --kind tp_btf/raw_tp for all")
    return StatsSource(syscall_stats(None, kind=args.kind, **kw), "all syscalls")


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
                              us(r["avg_ns"]), us(r["p50_ns"]), us(r["p99_ns"]),
                              us(r["max_ns"])) for r in rows],
                            ["SYSCALL", "PID", "COMM", "COUNT", "ERRORS", "AVG(us)",
                             "P50(us)", "P99(us)", "MAX(us)"],
                            stream=out.stream, right=(1, 3, 4, 5, 6, 7, 8))
            out.flush()
            started[0] = now

        def at_end() -> None:
            flush_table()

        tick = (args.interval, flush_table) if args.interval else None
        ready = f"syscalls: {src.target} with {src.kind}: {cli_words(src.why)}"
        return run_events(src, out, stopper, args.duration, lambda ev: None, what="syscalls",
                          ready=ready, tick=tick, at_end=at_end,
                          counted=lambda: stats.counted, seen_word="call")
