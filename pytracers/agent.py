"""A monitoring agent: pytracers' tracers exported as Prometheus metrics.

    pytracers agent --listen 127.0.0.1:9435            # every syscall, every exec
    pytracers agent --listen :9435 --syscalls openat,read,write
    curl -s localhost:9435/metrics | grep pytracers_

This module is meant to be read as an example of embedding pytracers in a
long-running service.  Top to bottom:

1. :class:`Stats` -- the aggregates, in plain Python: exec counts per
   command, syscall counts per (command, syscall), latency histograms per
   command.  Events are folded in a batch at a time under one lock, so the
   HTTP thread never sees a half-applied batch.
2. :class:`StatsCollector` -- a ``prometheus_client`` custom collector: at
   each scrape it turns the aggregates into metric families, and reads the
   tracers' own counters (events delivered, events lost in the kernel because
   a ring buffer was full).  Nothing is exported per event: a scrape costs the
   same whatever the event rate.
3. :func:`pump` -- one asyncio task per tracer: ``async for batch in
   pytracers.aio.batches(tracer)`` wakes on the ring buffer's fd (no thread,
   no busy polling) and hands each batch to :class:`Stats`.  Exec events come
   as decoded records; syscall events, many more, as numpy rows
   (``arrays=True``), which :meth:`Stats.add_syscall_rows` groups with numpy.
4. :func:`run` -- opens the tracers (:class:`~pytracers.tracers.ExecTracer`
   on the execve tracepoints; :class:`~pytracers.tracers.SyscallTracer` with
   the probe kind chosen below), serves ``/metrics`` with
   ``prometheus_client.start_http_server`` (a daemon thread), runs the pumps
   until SIGTERM/SIGINT or ``--duration``, then closes every tracer -- which
   detaches all links -- and stops the server.
5. :func:`main` -- the command line; ``pytracers agent`` calls it with its
   parsed arguments, ``python -m pytracers.agent`` with ``sys.argv``.

Which syscall probe: named syscalls (``--syscalls``) are traced as
:func:`pytracers.choose.trace_syscall` decides -- ``tp``, the per-syscall
tracepoints, so the rest of the system pays nothing (else tp_btf, else
raw_tp); all syscalls as :func:`pytracers.choose.trace_all_syscalls` decides
-- ``tp_btf`` (the cheapest per call, but it runs on every syscall of the
system), falling back to ``raw_tp`` where tp_btf is missing.
``--syscall-kind`` overrides.  See docs/which-probe.md.

Metrics (``comm`` is the 15-byte command name; past ``--max-comms`` distinct
names, new ones are counted under ``comm="[other]"`` to bound cardinality):

==========================================  ======================================
``pytracers_execs_total{comm}``             successful execve(2), by the new program
``pytracers_exec_failures_total{comm}``     failed execve(2), by the caller
``pytracers_syscalls_total{comm,syscall}``  completed syscalls
``pytracers_syscall_latency_seconds{comm}`` histogram, entry to exit
``pytracers_events_total{tracer}``          events the agent read
``pytracers_lost_events_total{tracer}``     events dropped in the kernel (ring full)
``pytracers_agent_info{...}``               the probe kinds in use (value 1)
==========================================  ======================================
"""
from __future__ import annotations

import argparse
import asyncio
import bisect
import logging
import signal
import sys
import threading
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from . import aio
from .errors import BadArgumentError
from .kinds import RAW_TP, TP, TP_BTF

__all__ = ["Stats", "StatsCollector", "pump", "run", "main", "add_arguments",
           "LATENCY_BUCKETS", "OTHER_COMM"]

log = logging.getLogger("pytracers.agent")

#: upper bounds (seconds) of the latency histogram's buckets: 1 us .. ~4 s
LATENCY_BUCKETS: Tuple[float, ...] = tuple(1e-6 * 4 ** i for i in range(12))
OTHER_COMM = "[other]"
DEFAULT_LISTEN = ("127.0.0.1", 9435)


# ---- 1. aggregates ----------------------------------------------------------------------

class _Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self, nbuckets: int) -> None:
        self.counts = [0] * (nbuckets + 1)    # last slot: above the largest bound (+Inf)
        self.sum = 0.0


class Stats:
    """What the agent has seen, ready to be exported.  Thread-safe: the
    asyncio thread adds, the HTTP thread reads."""

    def __init__(self, max_comms: int = 1000,
                 buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        if max_comms < 1:
            raise BadArgumentError("max_comms must be at least 1")
        self.lock = threading.Lock()
        self.max_comms = max_comms
        self.buckets = tuple(buckets)
        self._bounds_ns = [b * 1e9 for b in self.buckets]
        self.comms: set = set()
        self.execs: Dict[str, int] = {}
        self.exec_failures: Dict[str, int] = {}
        self.syscalls: Dict[Tuple[str, str], int] = {}
        self.latency: Dict[str, _Histogram] = {}

    def _comm(self, comm: str) -> str:
        """``comm``, or OTHER_COMM once max_comms distinct names were seen."""
        if comm in self.comms:
            return comm
        if len(self.comms) < self.max_comms:
            self.comms.add(comm)
            return comm
        return OTHER_COMM

    def add_execs(self, events: Iterable[Any]) -> None:
        """Fold exec events (``.comm``, ``.ret``) in."""
        with self.lock:
            for ev in events:
                comm = self._comm(ev.comm)
                table = self.execs if ev.ret == 0 else self.exec_failures
                table[comm] = table.get(comm, 0) + 1

    def add_syscalls(self, events: Iterable[Any]) -> None:
        """Fold syscall events (``.comm``, ``.name``, ``.latency_ns``) in."""
        bounds = self._bounds_ns
        nb = len(bounds)
        with self.lock:
            counts, hists = self.syscalls, self.latency
            for ev in events:
                comm = self._comm(ev.comm)
                key = (comm, ev.name)
                counts[key] = counts.get(key, 0) + 1
                h = hists.get(comm)
                if h is None:
                    h = hists[comm] = _Histogram(nb)
                lat = ev.latency_ns
                h.counts[bisect.bisect_left(bounds, lat)] += 1
                h.sum += lat


    def add_syscall_rows(self, rows: Any) -> None:
        """The same as :meth:`add_syscalls`, from a numpy structured array
        (``RingBuffer.read_batch()``: fields ``comm``, ``id``,
        ``latency_ns``).  numpy groups the batch, so the Python work is per
        distinct (comm, syscall) in the batch rather than per event -- what
        lets the agent keep up with every syscall of a busy machine."""
        import numpy as np

        from .tracers.syscalls import syscall_name
        if not len(rows):
            return
        comms, comm_of_row = np.unique(rows["comm"], return_inverse=True)
        comm_of_row = comm_of_row.reshape(-1)
        ids = rows["id"]
        nb = len(self._bounds_ns) + 1
        bucket = np.searchsorted(np.asarray(self._bounds_ns), rows["latency_ns"], side="left")
        # one flat index per (comm, id) and per (comm, bucket), counted by bincount
        pair, pair_counts = np.unique(comm_of_row.astype(np.int64) * (1 << 32)
                                      + (ids & 0xFFFFFFFF), return_counts=True)
        hist = np.bincount(comm_of_row * nb + bucket, minlength=len(comms) * nb)
        sums = np.bincount(comm_of_row, weights=rows["latency_ns"], minlength=len(comms))
        names = [c.partition(b"\0")[0].decode("utf-8", "replace") for c in comms.tolist()]
        with self.lock:
            local = [self._comm(n) for n in names]
            counts, hists = self.syscalls, self.latency
            for p, n in zip(pair.tolist(), pair_counts.tolist()):
                key = (local[p >> 32], syscall_name(p & 0xFFFFFFFF))
                counts[key] = counts.get(key, 0) + n
            for ci, comm in enumerate(local):
                h = hists.get(comm)
                if h is None:
                    h = hists[comm] = _Histogram(nb - 1)
                for b, n in enumerate(hist[ci * nb:(ci + 1) * nb].tolist()):
                    h.counts[b] += n
                h.sum += float(sums[ci])


# ---- 2. export ----------------------------------------------------------------------------

class StatsCollector:
    """Builds the metric families from :class:`Stats` at each scrape
    (``prometheus_client``'s custom-collector protocol: ``collect()``)."""

    def __init__(self, stats: Stats, tracers: Dict[str, Any],
                 info: Optional[Dict[str, str]] = None) -> None:
        self.stats = stats
        self.tracers = tracers          # name -> tracer (for delivered / lost)
        self.info = info or {}

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                            HistogramMetricFamily)
        s = self.stats
        execs = CounterMetricFamily("pytracers_execs", "Successful execve(2) calls, by the "
                                    "command name of the new program", labels=["comm"])
        fails = CounterMetricFamily("pytracers_exec_failures", "Failed execve(2) calls, by "
                                    "the command name of the caller", labels=["comm"])
        calls = CounterMetricFamily("pytracers_syscalls", "Completed syscalls",
                                    labels=["comm", "syscall"])
        lat = HistogramMetricFamily("pytracers_syscall_latency_seconds",
                                    "Syscall latency from entry to exit", labels=["comm"])
        with s.lock:
            for comm, n in s.execs.items():
                execs.add_metric([comm], n)
            for comm, n in s.exec_failures.items():
                fails.add_metric([comm], n)
            for (comm, name), n in s.syscalls.items():
                calls.add_metric([comm, name], n)
            for comm, h in s.latency.items():
                cum, buckets = 0, []
                for bound, c in zip(s.buckets + (float("inf"),), h.counts):
                    cum += c
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), cum))
                lat.add_metric([comm], buckets, h.sum / 1e9)
        yield from (execs, fails, calls, lat)

        events = CounterMetricFamily("pytracers_events", "Events read by the agent",
                                     labels=["tracer"])
        lost = CounterMetricFamily("pytracers_lost_events", "Events dropped in the kernel "
                                   "because the ring buffer was full", labels=["tracer"])
        for name, t in self.tracers.items():
            if t.closed:
                continue
            events.add_metric([name], t.delivered)
            lost.add_metric([name], t.lost)
        yield from (events, lost)
        if self.info:
            info = GaugeMetricFamily("pytracers_agent_info", "The probe kinds the agent uses",
                                     labels=sorted(self.info))
            info.add_metric([self.info[k] for k in sorted(self.info)], 1)
            yield info


# ---- 3. reading ---------------------------------------------------------------------------

async def pump(tracer: Any, sink: Any, arrays: bool = False) -> None:
    """Feed ``tracer``'s events to ``sink(batch)`` until cancelled or the
    tracer closes; ``arrays``: batches are numpy structured arrays rather
    than lists of decoded records."""
    async for batch in aio.batches(tracer, arrays=arrays):
        sink(batch)


# ---- 4. the service -----------------------------------------------------------------------

def _syscall_tracer(syscalls: Optional[List[str]], kind: str, **kw: Any) -> Any:
    from .tracers import SyscallTracer
    # many events: a larger ring, and wake the reader per 64 KiB rather than per event
    kw.setdefault("ring_size", 4 << 20)
    kw.setdefault("wakeup_bytes", 64 << 10)
    kw.setdefault("latency", 0.25)
    if kind != "auto":
        return SyscallTracer(syscalls, kind=kind, **kw)
    if syscalls:
        from .choose import trace_syscall      # tp, else tp_btf, else raw_tp
        return trace_syscall(syscalls, **kw)
    from .choose import trace_all_syscalls     # tp_btf, else raw_tp
    return trace_all_syscalls(**kw)


class _Stop(BaseException):
    """SIGTERM/SIGINT before the event loop runs (while tracers load)."""


def _stop_now(signum: int, frame: Any) -> None:
    raise _Stop()


def _install_early_stop() -> Dict[int, Any]:
    """Until the event loop takes over, SIGTERM/SIGINT unwind run() through
    its ``finally`` (closing what is open) instead of killing the process."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _stop_now) for sig in (signal.SIGTERM, signal.SIGINT)}


def run(host: str = DEFAULT_LISTEN[0], port: int = DEFAULT_LISTEN[1], *,
        syscalls: Optional[Sequence[str]] = None, syscall_kind: str = "auto",
        execs: bool = True, trace_syscalls: bool = True,
        pid: Optional[int] = None, comm: Optional[str] = None,
        duration: Optional[float] = None, max_comms: int = 1000,
        ready: Any = None) -> Dict[str, int]:
    """Serve the metrics on ``host:port`` until SIGTERM/SIGINT or ``duration``
    seconds; returns the totals (events read and lost per tracer).

    ``ready(url)`` is called once everything is attached and the server
    listens (``port=0`` picks a free port; ``url`` has the real one)."""
    from prometheus_client import CollectorRegistry, start_http_server

    stats = Stats(max_comms=max_comms)
    tracers: Dict[str, Any] = {}
    # exec events are rare: decoded records; syscalls are many: numpy rows
    sinks = {"exec": (stats.add_execs, False), "syscalls": (stats.add_syscall_rows, True)}
    server = None
    previous = _install_early_stop()
    try:
        if execs:
            from .tracers import ExecTracer
            tracers["exec"] = ExecTracer(pid=pid, comm=comm)
        if trace_syscalls:
            tracers["syscalls"] = _syscall_tracer(list(syscalls) if syscalls else None,
                                                  syscall_kind, pid=pid, comm=comm)
        info = {f"{name}_kind": t.kind for name, t in tracers.items()}
        registry = CollectorRegistry(auto_describe=True)
        registry.register(StatsCollector(stats, tracers, info))
        server, _thread = start_http_server(port, addr=host, registry=registry)
        bound = server.server_address[1]
        url = f"http://{host}:{bound}/metrics"
        for name, t in tracers.items():
            log.info("%s: %s", name, t.why)
        if ready is not None:
            ready(url)
        asyncio.run(_serve(tracers, sinks, duration))
    except _Stop:
        log.info("stopped while starting")
    finally:
        totals = {f"{name}_{what}": int(getattr(t, what)) for name, t in tracers.items()
                  if not t.closed for what in ("delivered", "lost")}
        for t in tracers.values():
            t.close()                       # detaches every link
        if server is not None:
            server.shutdown()
            server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return totals


async def _serve(tracers: Dict[str, Any], sinks: Dict[str, Any],
                 duration: Optional[float]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(pump(t, *sinks[name]), name=f"pump-{name}")
             for name, t in tracers.items()]
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([stopper, *tasks], timeout=duration,
                                     return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            exc = t.exception() if t is not stopper else None
            if exc is not None:
                raise exc                   # a pump failed: stop, and say why
    finally:
        for t in (stopper, *tasks):
            t.cancel()
        await asyncio.gather(stopper, *tasks, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


# ---- 5. command line ----------------------------------------------------------------------

def _listen(value: str) -> Tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return (host.strip("[]") or "0.0.0.0", int(port))


def _names(value: str) -> List[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of syscall names")
    return names


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The agent's own options (``pytracers agent`` adds them to its parser)."""
    g = p.add_argument_group("agent options")
    g.add_argument("--syscalls", type=_names, metavar="NAME[,NAME...]",
                   help="only these syscalls (traced with tp: nothing else pays); "
                        "default: every syscall")
    g.add_argument("--syscall-kind", choices=("auto", TP, RAW_TP, TP_BTF),
                   default="auto", help="probe kind of the syscall tracer (default auto: tp "
                                        "for named syscalls, else tp_btf, else raw_tp)")
    g.add_argument("--no-execs", dest="execs", action="store_false",
                   help="do not trace execve(2)")
    g.add_argument("--no-syscalls", dest="trace_syscalls", action="store_false",
                   help="do not trace syscalls")
    g.add_argument("--max-comms", type=int, default=1000, metavar="N",
                   help="distinct command names kept as labels (default 1000); "
                        f"later ones count as comm=\"{OTHER_COMM}\"")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pytracers agent", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", type=_listen, default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help="address to serve /metrics on (default %s:%d; port 0: any free "
                        "port)" % DEFAULT_LISTEN)
    p.add_argument("-p", "--pid", type=int, help="only this process id")
    p.add_argument("-c", "--comm", help="only this command name")
    p.add_argument("-d", "--duration", type=float, metavar="SECONDS",
                   help="stop after this many seconds (default: until SIGTERM/SIGINT)")
    p.add_argument("--debug", action="store_true", help="log what the agent does")
    add_arguments(p)
    return p


def main(argv: Union[Sequence[str], argparse.Namespace, None] = None) -> int:
    """Run the agent; returns the exit status.  ``argv``: command-line words
    (default ``sys.argv[1:]``) or arguments already parsed by ``pytracers agent``."""
    if isinstance(argv, argparse.Namespace):
        args = argv
        defaults = build_parser().parse_args([])
        for k, v in vars(defaults).items():      # options the caller's parser lacks
            if not hasattr(args, k):
                setattr(args, k, v)
    else:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
        logging.basicConfig(level=logging.INFO if args.debug else logging.WARNING,
                            format="pytracers agent: %(levelname)s: %(message)s")
    host, port = args.listen

    def ready(url: str) -> None:
        print(f"pytracers agent: serving {url}", file=sys.stderr, flush=True)

    totals = run(host, port, syscalls=args.syscalls, syscall_kind=args.syscall_kind,
                 execs=args.execs, trace_syscalls=args.trace_syscalls, pid=args.pid,
                 comm=args.comm, duration=args.duration, max_comms=args.max_comms,
                 ready=ready)
    print("pytracers agent: stopped, links detached; " +
          ", ".join(f"{k}={v}" for k, v in totals.items()), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
