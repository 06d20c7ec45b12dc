"""pytracers benchmarks (run through bench/run).

Eight sections, all measured in the same run and printed with the targets of
issues 6, 13 and 14 next to them (uprobe and symbols: see bench/user.py):

drain       Ring drain rate for 8, 64 and 256-byte records.  The ring
            (bench.bpf.o's ``events``) is filled to capacity with
            BPF_PROG_TEST_RUN of fill_<size> (not timed), then drained by
            (a) libbpf's C consumer: bench/ringdrain.c, built here with gcc
                against libbpf-dev, one ring_buffer__consume() call with a C
                callback that adds up each record's seq;
            (b) pytracers per event: RingBuffer.consume() with a Python
                callback that adds up ``rec.seq`` of the BTF-decoded record;
            (c) pytracers batch: RingBuffer.read_batch() (a numpy structured
                array copied out of the ring) and ``arr["seq"].sum()``;
            (d) pytracers zero-copy batch: RingBuffer.consume_views() with a
                callback doing ``rows["seq"].sum()`` on a view into the ring
                (libbpf's contract: the data is valid during the callback).
            Each drain is checked: exactly the records filled, seqs complete.
perf        Perf-buffer drain rate for 64-byte samples (80-byte records).  CPU
            0's ring of bench/perf_fill.bpf.o's ``events`` (a perf event
            array) is filled to capacity with BPF_PROG_TEST_RUN of
            fill_perf64 on CPU 0 (not timed), then drained by
            (a) libbpf's C consumer: bench/perfdrain.c, one
                perf_buffer__consume() call with a C callback adding up seq;
            (b) pytracers per event: PerfBuffer.consume() with a Python
                callback adding up ``rec.seq``;
            (c) pytracers batch: PerfBuffer.read_batch() + ``arr["seq"].sum()``;
            (d) pytracers zero-copy: PerfBuffer.consume_views() with
                ``rows["seq"].sum()``.
            Each drain is checked: exactly the samples filled, seqs complete.
drain-parts The 64-byte drains of drain and perf taken apart (ns per record,
            alternating with the C consumer): one vectorised pass over the
            headers alone, that plus a pass over seq, a bare memcpy of the
            pending bytes, read_batch() without and with the caller's sum,
            consume_views() with an empty callback and with the sum.
probe-cost  ns per getpgid(2) in a C loop (bench/sysloop.c) with nothing
            attached, with the count-only program, with the built-in
            SyscallTracer and no reader, and with the tracer and a reader
            thread draining it (per event), for each probe kind this kernel
            allows; the tracer both with measure_latency=False (one program
            per call, as the count-only program: the target is judged on
            it) and with measure_latency=True (entry + exit, paired).  "added" = the condition's ns/call minus the bare loop's.
start       Process start to probe attached, pytracers (the CLI, `trace
            syscall:getpgid --json`, and a Python script) vs bpftrace on
            syscalls:sys_enter_getpgid of a trigger process that calls
            getpgid every 100 us: both tools print the kernel timestamp
            (bpf_ktime_get_ns, CLOCK_MONOTONIC) of the first event they see;
            the figure is that timestamp minus CLOCK_MONOTONIC taken just
            before the tool's process is spawned.  So it measures start-up
            + compile/load + attach, not how fast the first event is read.
bpftrace    pytracers beside bpftrace one-liners at equal work on the same
            loops: per-event printf, count + histogram, uprobe printf; loop +
            tool CPU, delivered and lost (bench/bench_bpftrace.py).
maps        Reading a hash map of 100,000 entries with 8-byte keys and values
            (bench/maps.bpf.o, filled with update_batch): Map.lookup_batch()
            into numpy arrays, the same into a dict, and the per-entry path
            Map.items() (bpf_map_get_next_key + lookup per entry), same run.
ringloss    Reservations refused with room in the ring (bench/ringloss.py):
            a per-event reader thread on a ring that holds a whole loop of
            getpgid(2) calls, the ring positions read and stored as single
            8-byte accesses (pytracers now) vs with struct.pack_into (before:
            it zeroes the consumer position first), alternating; each
            refusal is classified full / not full by the producer.

Figures are medians over repetitions.  Throughput and per-call costs are in
CPU time (the consumer thread's; the loop process's user + system time, which
includes the BPF programs run in its syscalls), so time spent preempted by
other work on a shared machine does not count; cache and memory-bandwidth
contention still do.  The machine (CPU, kernel, load, qemu guests running) is
printed first: read the figures with the load line.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)            # the working tree's pytracers
sys.path.insert(0, HERE)

import pytracers  # noqa: E402
from pytracers.errors import NotSupportedError, PytracersError  # noqa: E402

BUILD = os.environ.get("PYTRACERS_BENCH_BUILD", os.path.join(HERE, "_build"))
from pytracers import _shipped  # noqa: E402
from pytracers.kernel.symbols import syscall_function  # noqa: E402
from pytracers.tracers.syscalls import syscall_number  # noqa: E402

GETPGID_NR = syscall_number("getpgid")     # 121 on x86-64, 155 on arm64
TARGETS = {
    "batch64": ("read_batch drain (copies), 64-byte records", ">= 0.6x the C consumer", 0.6),
    "views64": ("consume_views drain (zero-copy), 64-byte records", ">= 1.0x the C consumer",
                1.0),
    "per_event": ("per-event path, one field decoded", ">= 1 M events/s", 1e6),
    "tracer_vs_count": ("built-in tracer added cost", "<= 1.5x count-only's", 1.5),
    "consumer_vs_none": ("added cost with a reader draining", "<= 2x without a reader", 2.0),
    "start": ("CLI start -> first event (issue 16)", "<= 0.5x bpftrace's", 0.5),
    "start_inproc": ("in-process SyscallTracer() -> first event", "<= 0.15x bpftrace's start",
                     0.15),
    "uprobe_tracer_vs_count": ("uprobe tracer added cost", "<= 1.5x count-only's", 1.5),
    "symbol_lookups": ("symbol look-ups after one load", ">= 1 M/s", 1e6),
    "perf64": ("perf-buffer drain, 64-byte samples", ">= 0.5x perf_buffer__consume", 0.5),
    "map_batch": ("batch map read, 8-byte keys/values", ">= 1 M entries/s", 1e6),
}

import bench_stacks  # noqa: E402  (issue 15's sections)
import bench_bpftrace  # noqa: E402  (issue 16: side by side with bpftrace)

TARGETS.update(bench_stacks.TARGETS)
TARGETS.update(bench_bpftrace.TARGETS)
results: Dict[str, Any] = {"sections": {}, "targets": {}}


# ---- machine and helpers -----------------------------------------------------------------

def qemu_guests() -> int:
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().startswith("qemu-system"):
                        n += 1
            except OSError:
                pass
    return n


def load_line() -> str:
    la = os.getloadavg()
    return f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}, qemu guests running: {qemu_guests()}"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def in_vm_matrix() -> Optional[str]:
    return os.environ.get("PYTRACERS_VM_KERNEL")


def machine() -> Dict[str, Any]:
    import numpy
    from pytracers import _libbpf
    info = {
        "kernel": platform.release(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "libbpf": _libbpf.version() if hasattr(_libbpf, "version") else "?",
        "emulated": bool(in_vm_matrix()),
        "load": load_line(),
    }
    return info


def build(name: str, libs: Tuple[str, ...] = (), optional: bool = False) -> Optional[str]:
    """Compile bench/<name>.c into the build dir (cached by source hash,
    flags, compiler and machine: an arm64 guest shares the directory).
    ``optional``: None where it cannot be built (no compiler, no headers)."""
    src = os.path.join(HERE, f"{name}.c")
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        if optional:
            print(f"   ({cc} not found: no {name} baseline)")
            return None
        sys.exit(f"bench/run: {cc} not found (install gcc and libbpf-dev)")
    flags = ["-O2", "-Wall", "-Wextra"]
    with open(src, "rb") as f:
        h = hashlib.sha256(f.read() + " ".join(flags + list(libs)).encode())
    ver = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    h.update(ver.encode() + platform.machine().encode())
    out = os.path.join(BUILD, f"{name}-{h.hexdigest()[:12]}")
    if not os.path.exists(out):
        os.makedirs(BUILD, exist_ok=True)
        tmp = out + f".tmp{os.getpid()}"
        r = subprocess.run([cc, *flags, "-o", tmp, src, *libs], capture_output=True, text=True)
        if r.returncode:
            if optional:
                print(f"   (building {name}.c failed: no {name} baseline: "
                      f"{r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''})")
                return None
            sys.exit(f"bench/run: building {name}.c failed:\n{r.stderr}")
        os.replace(tmp, out)
    return out


class CRounds:
    """A C baseline (bench/ringdrain.c, perfdrain.c) run with "-": it drains
    once per line we write, so its rounds alternate with ours (A B A B ...)
    on a machine whose load changes under us.  ``round()`` -> records per
    second of the C consumer's CPU time."""

    def __init__(self, argv: List[str], what: str) -> None:
        self.what = what
        self.p = subprocess.Popen(argv + ["-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)

    def round(self) -> float:
        assert self.p.stdin is not None and self.p.stdout is not None
        try:
            self.p.stdin.write("\n")
            self.p.stdin.flush()
        except BrokenPipeError:
            pass
        line = self.p.stdout.readline()
        if not line.strip():
            self.p.wait()
            assert self.p.stderr is not None
            sys.exit(f"bench/run: {self.what} failed: {self.p.stderr.read().strip()}")
        n, ns = line.split()
        return int(n) / (int(ns) / 1e9)

    def close(self) -> None:
        assert self.p.stdin is not None
        self.p.stdin.close()
        if self.p.wait():
            assert self.p.stderr is not None
            sys.exit(f"bench/run: {self.what} failed: {self.p.stderr.read().strip()}")


def alternate(reps: int, conditions: Dict[str, Callable[[], float]]) -> Dict[str, List[float]]:
    """``reps`` rounds of every condition in turn (A B C A B C ...), after
    one warm-up round that is not kept (first touch of each mapping); the
    rates of each condition, in round order."""
    out: Dict[str, List[float]] = {k: [] for k in conditions}
    for r in range(reps + 1):
        for k, measure in conditions.items():
            rate = measure()
            if r:
                out[k].append(rate)
    return out


def median(xs: List[float]) -> float:
    return statistics.median(xs)


def fmt_rate(r: float) -> str:
    return f"{r / 1e6:7.2f} M/s"


def heading(title: str) -> None:
    print()
    print(f"== {title}")
    print(f"   ({load_line()})")


def target(key: str, value: float, ok: bool, shown: str) -> None:
    what, goal, _ = TARGETS[key]
    if in_vm_matrix():
        shown += " EMULATED (qemu TCG)"
    results["targets"][key] = {"what": what, "goal": goal, "measured": shown, "met": ok}


# ---- 1. ring drain ------------------------------------------------------------------------

def _drains(buf: Any) -> Tuple[Callable[[], Tuple[int, int, Any]], ...]:
    """The three ways sections 1 and 1b drain ``buf`` (a ring or perf buffer),
    each returning (records, sum of seq, what must live until timed)."""
    def per_event() -> Tuple[int, int, Any]:
        acc = [0]

        def cb(rec: Any) -> None:
            acc[0] += rec.seq
        return buf.consume(cb), acc[0], None

    def batch() -> Tuple[int, int, Any]:
        arr = buf.read_batch()
        return len(arr), int(arr["seq"].sum()), arr

    def views() -> Tuple[int, int, Any]:
        acc = [0]

        def vcb(rows: Any) -> None:
            acc[0] += int(rows["seq"].sum())
        return buf.consume_views(vcb), acc[0], None
    return per_event, batch, views


def drain_section(quick: bool) -> None:
    ring = (2 if quick else 16) << 20
    reps = 5 if quick else 9
    heading(f"ring drain: ring of {ring >> 20} MiB filled to capacity by BPF_PROG_TEST_RUN, "
            f"median of {reps} alternating rounds (C, per event, read_batch, consume_views); "
            "records per second of the consumer's CPU time")
    ringdrain = build("ringdrain", ("-lbpf",), optional=True)
    obj_path = pytracers.object_path("bench")
    rows = {}
    print(f"   {'record':>7} {'records':>8}  {'libbpf C':>12}  {'per event (x C)':>22}  "
          f"{'read_batch (x C)':>22}  {'consume_views (x C)':>22}")
    for size in (8, 64, 256):
        stride = (size + 8 + 7) & ~7
        cap = ring // stride
        # (a) C, in its own process, one drain per round
        c_proc = (CRounds([ringdrain, obj_path, str(size), str(ring)], "ringdrain")
                  if ringdrain is not None else None)
        # (b), (c), (d)
        o = pytracers.open(obj_path)
        o.only(f"fill_{size}")
        o.maps["events"].max_entries = ring
        with o.load() as obj:
            fill = obj.programs[f"fill_{size}"]
            rb = obj.ring_buffer(event=f"bench_rec{size}")
            next_seq = [0]

            def refill() -> Tuple[int, int]:
                left = cap
                while left:
                    got = fill.test_run([min(left, 4096), 0]).retval
                    if not got:
                        break
                    left -= got
                first = next_seq[0]
                next_seq[0] += cap - left
                return cap - left, first

            def expect_sum(n: int, first: int) -> int:
                return n * first + n * (n - 1) // 2

            def rate(what: str, drain: Callable[[], Tuple[int, int, Any]]) -> Callable[[], float]:
                """One fill, then ``drain()`` timed -> records per second of
                thread CPU time; ``drain()`` -> (records, seq sum, what to
                free after the clock stops), checked against the fill."""
                def measure() -> float:
                    n, first = refill()
                    t0 = time.thread_time()
                    got, total, keep = drain()
                    dt = time.thread_time() - t0
                    if got != n or total != expect_sum(n, first):
                        sys.exit(f"bench/run: {what} drain returned {got}/{n} records")
                    del keep
                    return n / dt
                return measure

            per_event, batch, views = _drains(rb)

            conditions: Dict[str, Callable[[], float]] = {}
            if c_proc is not None:
                conditions["c"] = c_proc.round
            conditions.update(per_event=rate("per-event", per_event),
                              batch=rate("batch", batch), views=rate("view", views))
            try:
                got = alternate(reps, conditions)
            finally:
                if c_proc is not None:
                    c_proc.close()
            rb.close()
        c_rates = got.get("c", [])
        ev_rates, batch_rates, view_rates = got["per_event"], got["batch"], got["views"]
        c = median(c_rates) if c_rates else float("nan")     # nan: no C baseline
        ev, b, v = median(ev_rates), median(batch_rates), median(view_rates)
        rows[size] = {"records": cap, "c": c, "per_event": ev, "batch": b, "views": v,
                      "per_event_ratio": ev / c, "batch_ratio": b / c, "views_ratio": v / c,
                      "c_all": c_rates, "per_event_all": ev_rates, "batch_all": batch_rates,
                      "views_all": view_rates}
        print(f"   {size:>5} B {cap:>8}  {fmt_rate(c)}  {fmt_rate(ev)} ({ev / c:5.3f}x)  "
              f"{fmt_rate(b)} ({b / c:5.3f}x)  {fmt_rate(v)} ({v / c:5.3f}x)")
    results["sections"]["drain"] = {"ring_bytes": ring, "reps": reps, "rows": rows}
    if ringdrain is None:
        return
    b64, v64 = rows[64]["batch_ratio"], rows[64]["views_ratio"]
    target("batch64", b64, b64 >= 0.6, f"{b64:.3f}x (read_batch, copies)")
    target("views64", v64, v64 >= 1.0, f"{v64:.3f}x (consume_views, zero-copy)")
    pe = rows[8]["per_event"]
    target("per_event", pe, pe >= 1e6, f"{pe / 1e6:.2f} M/s (8-byte records: seq)")
    print("   per event: consume(cb), records decoded through the BTF layout, cb reads rec.seq;")
    print("   read_batch: arr = read_batch() (a copy) + arr['seq'].sum(); consume_views: "
          "callback(rows) on views into the ring, rows['seq'].sum()")


# ---- 1b. perf-buffer drain ------------------------------------------------------------------

PERF_REC = 80                       # a 64-byte sample's record: 8 + 4 + 68 (padded)
PAGE = os.sysconf("SC_PAGE_SIZE")


def perf_section(quick: bool) -> None:
    pages = 256 if quick else 1024
    reps = 5 if quick else 9
    cap = (pages * PAGE - 1) // PERF_REC      # the kernel keeps one byte free
    heading(f"perf-buffer drain: CPU 0's ring of {pages} pages ({cap} samples of 64 bytes) "
            f"filled by BPF_PROG_TEST_RUN, median of {reps} alternating rounds (C, per event, "
            "read_batch, consume_views); samples per second of the consumer's CPU time")
    perfdrain = build("perfdrain", ("-lbpf",))
    obj_path = os.path.join(HERE, "perf_fill.bpf.o")
    assert perfdrain is not None
    c_proc = CRounds([perfdrain, obj_path, str(pages)], "perfdrain")
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})                # test runs send to CPU 0's ring
    try:
        with pytracers.open(obj_path).load() as obj:
            fill = obj.programs["fill_perf64"]
            pb = obj.perf_buffer(event="perf_rec64", pages=pages)
            next_seq = [0]

            def refill() -> Tuple[int, int]:
                left = cap
                while left:
                    got = fill.test_run([min(left, 1024)]).retval
                    if not got:
                        break
                    left -= got
                first = next_seq[0]
                next_seq[0] += cap - left
                return cap - left, first

            def rate(what: str, drain: Callable[[], Tuple[int, int, Any]]) -> Callable[[], float]:
                def measure() -> float:
                    n, first = refill()
                    t0 = time.thread_time()
                    got, total, keep = drain()
                    dt = time.thread_time() - t0
                    if got != n or total != n * first + n * (n - 1) // 2 or pb.lost:
                        sys.exit(f"bench/run: perf {what} drain returned {got}/{n} samples")
                    del keep
                    return n / dt
                return measure

            per_event, batch, views = _drains(pb)

            try:
                got = alternate(reps, {"c": c_proc.round, "per_event": rate("per-event", per_event),
                                       "batch": rate("batch", batch), "views": rate("view", views)})
            finally:
                c_proc.close()
    finally:
        os.sched_setaffinity(0, before)
    c_rates, ev_rates, batch_rates, view_rates = (got[k] for k in ("c", "per_event", "batch",
                                                                   "views"))
    c, ev, b, v = (median(x) for x in (c_rates, ev_rates, batch_rates, view_rates))
    print(f"   {'sample':>7} {'samples':>8}  {'libbpf C':>12}  {'per event (x C)':>22}  "
          f"{'read_batch (x C)':>22}  {'consume_views (x C)':>22}")
    print(f"   {64:>5} B {cap:>8}  {fmt_rate(c)}  {fmt_rate(ev)} ({ev / c:5.3f}x)  "
          f"{fmt_rate(b)} ({b / c:5.3f}x)  {fmt_rate(v)} ({v / c:5.3f}x)")
    print("   C: perf_buffer__consume() with a C callback adding up seq; per event: "
          "consume(cb), cb reads rec.seq;")
    print("   read_batch: arr = read_batch() (a copy) + arr['seq'].sum(); consume_views: "
          "rows['seq'].sum() on views into the ring")
    results["sections"]["perf"] = {
        "pages": pages, "samples": cap, "reps": reps, "c": c, "per_event": ev, "batch": b,
        "views": v, "per_event_ratio": ev / c, "batch_ratio": b / c, "views_ratio": v / c,
        "c_all": c_rates, "per_event_all": ev_rates, "batch_all": batch_rates,
        "views_all": view_rates}
    best = max(b / c, v / c)
    target("perf64", best, best >= 0.5,
           f"{v / c:.3f}x (consume_views), {b / c:.3f}x (read_batch), {ev / c:.3f}x (per event)")


# ---- 1c. where a batch drain's time goes ----------------------------------------------------

def drain_parts_section(quick: bool) -> None:
    """The 64-byte drains of sections 1 and 1b taken apart, each part on a
    freshly filled ring, alternating rounds with the C consumer: one
    vectorised pass over the headers alone (what every batch drain must do
    before it may read a record), the same plus a pass over ``seq`` (two
    passes, not in pieces), a bare copy of the pending bytes (no check),
    ``read_batch()`` without and with the caller's ``arr["seq"].sum()``,
    ``consume_views()`` with a callback doing nothing and with the sum."""
    import numpy as np
    reps = 5 if quick else 9
    ring = (2 if quick else 16) << 20
    stride = 72
    cap = ring // stride
    heading(f"where the 64-byte drains' time goes: ring of {ring >> 20} MiB, perf ring of "
            f"{256 if quick else 1024} pages, median of {reps} alternating rounds; ns per "
            "record of the consumer's CPU time")
    ringdrain = build("ringdrain", ("-lbpf",), optional=True)
    perfdrain = build("perfdrain", ("-lbpf",), optional=True)
    if ringdrain is None or perfdrain is None:
        return
    obj_path = pytracers.object_path("bench")
    out: Dict[str, Dict[str, float]] = {}

    def parts(buf: Any, refill: Callable[[], int], span: Callable[[], Tuple[Any, int, int]],
              done: Callable[[], None], c: "CRounds") -> Dict[str, float]:
        def timed(fn: Callable[[], int]) -> Callable[[], float]:
            def measure() -> float:
                n = refill()
                t0 = time.thread_time()
                got = fn()
                dt = time.thread_time() - t0
                if got != n:
                    sys.exit(f"bench/run: drain parts: {got}/{n} records")
                return dt / n * 1e9
            return measure

        def scan() -> int:
            arr, off, n = span()
            (np.ndarray((n,), "<u4", buffer=arr, offset=off, strides=(rsize,)) == hdr0).all()
            done()
            return n

        def scan_sum() -> int:
            arr, off, n = span()
            (np.ndarray((n,), "<u4", buffer=arr, offset=off, strides=(rsize,)) == hdr0).all()
            np.ndarray((n,), "<u8", buffer=arr, offset=off + seq_at, strides=(rsize,)).sum()
            done()
            return n

        def copy() -> int:
            arr, off, n = span()
            arr[off:off + n * rsize].copy()
            done()
            return n

        def batch() -> int:
            return len(buf.read_batch())

        def batch_sum() -> int:
            a = buf.read_batch()
            a["seq"].sum()
            return len(a)

        def views() -> int:
            return int(buf.consume_views(lambda rows: None))

        def views_sum() -> int:
            acc = [0]

            def cb(rows: Any) -> None:
                acc[0] += int(rows["seq"].sum())
            return int(buf.consume_views(cb))

        got = alternate(reps, {"C": lambda: 1e9 / c.round(), "headers": timed(scan),
                               "headers+seq": timed(scan_sum), "memcpy": timed(copy),
                               "read_batch": timed(batch), "read_batch+sum": timed(batch_sum),
                               "views": timed(views), "views+sum": timed(views_sum)})
        return {k: median(v) for k, v in got.items()}

    # the ring (section 1's 64-byte case)
    c = CRounds([ringdrain, obj_path, "64", str(ring)], "ringdrain")
    o = pytracers.open(obj_path)
    o.only("fill_64")
    o.maps["events"].max_entries = ring
    try:
        with o.load() as obj:
            fill = obj.programs["fill_64"]
            rb = obj.ring_buffer(event="bench_rec64")
            rr = rb._reader
            rarr = np.frombuffer(rr._data, np.uint8)

            def rfill() -> int:
                left = cap
                while left:
                    k = fill.test_run([min(left, 4096), 0]).retval
                    if not k:
                        break
                    left -= k
                return cap - left

            def rspan() -> Tuple[Any, int, int]:
                cons = rr.consumer_pos()
                return rarr, rr._base + (cons & rr._mask), (rr.producer_pos() - cons) // stride

            rsize, hdr0, seq_at = stride, 64, 8
            out["ring"] = parts(rb, rfill, rspan, lambda: rr._set_consumer_pos(rr.producer_pos()),
                                c)
            rb.close()
    finally:
        c.close()
    # the perf buffer (section 1b's): the part up to the end of the ring
    # (the records past it are skipped by the raw parts, counted all the same)
    pages = 256 if quick else 1024
    pcap = (pages * PAGE - 1) // PERF_REC
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    c = CRounds([perfdrain, os.path.join(HERE, "perf_fill.bpf.o"), str(pages)], "perfdrain")
    try:
        with pytracers.open(os.path.join(HERE, "perf_fill.bpf.o")).load() as obj:
            pfill = obj.programs["fill_perf64"]
            pb = obj.perf_buffer(event="perf_rec64", pages=pages)
            pr = pb._reader
            ring0 = pr._rings[0]
            from pytracers.perfbuf.records import HEAD_OFFSET, TAIL_OFFSET, _U64

            def pfill_() -> int:
                left = pcap
                while left:
                    k = pfill.test_run([min(left, 1024)]).retval
                    if not k:
                        break
                    left -= k
                return pcap - left

            def pspan() -> Tuple[Any, int, int]:
                tail = _U64.unpack_from(ring0, TAIL_OFFSET)[0]
                head = _U64.unpack_from(ring0, HEAD_OFFSET)[0]
                pos = tail & pr._mask
                total = (head - tail) // PERF_REC
                n1 = min(total, (pr.size - pos) // PERF_REC)        # before the end
                k = n1 + (1 if (pr.size - pos) % PERF_REC and total > n1 else 0)
                start2 = (pos + k * PERF_REC) % pr.size             # after the wrapped one
                n2 = min(total - k, (pr.size - start2) // PERF_REC)
                if n1 >= n2:
                    return pr._arr(0), pr._base + pos, n1
                return pr._arr(0), pr._base + start2, n2

            def pdone() -> None:
                _U64.pack_into(ring0, TAIL_OFFSET, _U64.unpack_from(ring0, HEAD_OFFSET)[0])

            rsize, hdr0, seq_at = PERF_REC, 9, 12
            # the raw parts cover the longer stretch of records not broken by
            # the end of the ring; their figures are per record they covered
            def raw(fn_name: str) -> Callable[[], float]:
                def measure() -> float:
                    pfill_()
                    arr, off, n = pspan()
                    t0 = time.thread_time()
                    if fn_name == "headers":
                        (np.ndarray((n,), "<u4", buffer=arr, offset=off, strides=(rsize,))
                         == hdr0).all()
                    elif fn_name == "headers+seq":
                        (np.ndarray((n,), "<u4", buffer=arr, offset=off, strides=(rsize,))
                         == hdr0).all()
                        np.ndarray((n,), "<u8", buffer=arr, offset=off + seq_at,
                                   strides=(rsize,)).sum()
                    else:
                        arr[off:off + n * rsize].copy()
                    dt = time.thread_time() - t0
                    pdone()
                    return dt / n * 1e9
                return measure

            def whole(fn: Callable[[], int]) -> Callable[[], float]:
                def measure() -> float:
                    n = pfill_()
                    t0 = time.thread_time()
                    got = fn()
                    dt = time.thread_time() - t0
                    if got != n or pb.lost:
                        sys.exit(f"bench/run: perf drain parts: {got}/{n} samples")
                    return dt / n * 1e9
                return measure

            def p_views_sum() -> int:
                acc = [0]

                def cb(rows: Any) -> None:
                    acc[0] += int(rows["seq"].sum())
                return int(pb.consume_views(cb))

            def p_batch_sum() -> int:
                a = pb.read_batch()
                a["seq"].sum()
                return len(a)

            got = alternate(reps, {
                "C": lambda: 1e9 / c.round(), "headers": raw("headers"),
                "headers+seq": raw("headers+seq"), "memcpy": raw("memcpy"),
                "read_batch": whole(lambda: len(pb.read_batch())),
                "read_batch+sum": whole(p_batch_sum),
                "views": whole(lambda: int(pb.consume_views(lambda rows: None))),
                "views+sum": whole(p_views_sum)})
            res = {k: median(v) for k, v in got.items()}
            out["perf"] = res
    finally:
        c.close()
        os.sched_setaffinity(0, before)
    keys = ["C", "headers", "headers+seq", "memcpy", "read_batch", "read_batch+sum", "views",
            "views+sum"]
    print(f"   {'':6} " + " ".join(f"{k:>14}" for k in keys))
    for name, row in out.items():
        print(f"   {name:6} " + " ".join(f"{row[k]:11.2f} ns" for k in keys))
        print(f"   {'':6} " + " ".join(f"{row['C'] / row[k]:13.3f}x" for k in keys))
    print("   C: libbpf's consumer (whole drain, seq summed); headers: one vectorised pass over "
          "the record headers; +seq: then a pass")
    print("   over seq; memcpy: a copy of the pending bytes, nothing checked; read_batch / views: "
          "the readers, without and with the sum")
    results["sections"]["drain-parts"] = {"ring_bytes": ring, "perf_pages": pages, "reps": reps,
                                          "ns_per_record": out}


# ---- 2. probe cost -------------------------------------------------------------------------

# sysloop.c's "count N" in Python, where there is no compiler (the arm64
# guest): the same getpgid calls, with the interpreter's loop around them
# (a constant added to every figure; the differences stand).
PY_SYSLOOP = ("import os, sys, time\n"
              "n = int(sys.argv[2]); g = os.getpgid\n"
              "w0 = time.monotonic_ns(); c0 = time.process_time_ns()\n"
              "for _ in range(n): g(0)\n"
              "c1 = time.process_time_ns(); w1 = time.monotonic_ns()\n"
              "print((c1 - c0) / n, (w1 - w0) / n)\n")


class Loop:
    def __init__(self, n: int, trials: int) -> None:
        built = build("sysloop", optional=True)
        self.bin = [built] if built else [sys.executable, "-c", PY_SYSLOOP]
        self.n = n
        self.trials = trials
        self.wall: List[float] = []
        self.irq_work = 0.0

    def once(self) -> float:
        """CPU ns per call (user + system of the loop process)."""
        r = subprocess.run([*self.bin, "count", str(self.n)], capture_output=True, text=True,
                           check=True)
        cpu, wall = (float(x) for x in r.stdout.split())
        self.wall.append(wall)
        return cpu

    def measure(self, between: Optional[Callable[[], None]] = None) -> float:
        """Median CPU ns per call over the trials; also counts the irq_work
        interrupts (how the ring buffer wakes readers) during the loops in
        ``self.irq_work`` (per 1000 calls)."""
        xs = []
        iwi = 0
        for _ in range(self.trials):
            before = irq_work_interrupts()
            xs.append(self.once())
            iwi += irq_work_interrupts() - before
            if between is not None:
                between()
        self.irq_work = 1000 * iwi / (self.n * self.trials)
        return median(xs)


def irq_work_interrupts() -> int:
    """The IWI line of /proc/interrupts, all CPUs (other work adds a few)."""
    try:
        with open("/proc/interrupts") as f:
            for line in f:
                parts = line.split()
                if parts and parts[0] == "IWI:":
                    return sum(int(x) for x in parts[1:] if x.isdigit())
    except OSError:
        pass
    return 0


# where the function-attached kinds probe getpgid: __x64_sys_getpgid, __arm64_sys_getpgid
FUNCTION = syscall_function("getpgid")
# the count-only and floor programs (bench/probe_cost.bpf.c, built by build.py for
# each architecture: bench/, bench/arm64/; not shipped)
PROBE_COST = os.path.join(HERE, _shipped.ARCH_DIRS.get(os.uname().machine, ""),
                          "probe_cost.bpf.o")
KINDS = ("tp", "raw_tp", "tp_btf", "kprobe", "fentry")


def count_only(kind: str, what: str = "count") -> Tuple[Any, Callable[[], int]]:
    """Load and attach the count-only program of ``kind`` on getpgid, from
    bench/probe_cost.bpf.o: for the tracepoint kinds after the same
    syscall-id filter the syscall tracer uses.  ``what="floor"``: the floor
    program instead (same filters, one record of the tracer's size with only
    the header); hits are then records emitted."""
    if kind in ("kprobe", "fentry"):
        prog = f"{what}_{kind}"
        o = pytracers.open(PROBE_COST)
        o.only(prog)
        if kind == "fentry":
            o.programs[prog].set_attach_target(FUNCTION)
        if what == "floor":
            o.maps["events"].max_entries = FLOOR_RING
        obj = o.load()
        try:
            p = obj.programs[prog]
            if kind == "kprobe":
                p.attach_kprobe(FUNCTION)
            else:
                p.attach_trace()
        except BaseException:
            obj.close()
            raise
        return obj, hits_of(obj, what)
    prog = {"tp": "sc_tp_", "raw_tp": "sc_raw_", "tp_btf": "sc_btf_"}[kind] + what
    o = pytracers.open(PROBE_COST)
    o.only(prog)
    if kind != "tp":
        o.config["cfg_filter_ids"] = 1
    if what == "floor":
        o.maps["events"].max_entries = FLOOR_RING
    obj = o.load()
    try:
        if kind != "tp":
            obj.maps["syscall_ids"].update(GETPGID_NR, b"\x01")
        p = obj.programs[prog]
        if kind == "tp":
            p.attach_tracepoint("syscalls", "sys_enter_getpgid")
        else:
            p.attach()
    except BaseException:
        obj.close()
        raise
    return obj, hits_of(obj, what)


FLOOR_RING = 1 << 22          # set per run by probe_cost_section: the tracer's ring size


def hits_of(obj: Any, what: str) -> Callable[[], int]:
    """How many times the count (or floor) program ran: its count, or the
    records it emitted plus those lost; the floor's ring is drained by
    the caller between trials."""
    if what == "count":
        return lambda: obj.maps["counts"].sum_percpu_u64()
    import numpy as np
    ring = obj.ring_buffer("events", dtype=np.dtype((np.void, 120)))   # 120: both records
    seen = [0]

    def drain() -> int:
        seen[0] += ring.consume_views(lambda rows: None)
        return seen[0] + obj.maps["lost"].sum_percpu_u64()
    return drain


def tracer(kind: str, **kw: Any) -> Any:
    """The built-in tracer of ``kind`` on getpgid."""
    from pytracers.tracers import FunctionTracer, SyscallTracer
    if kind in ("kprobe", "fentry"):
        return FunctionTracer(FUNCTION, kind=kind, **kw)
    return SyscallTracer("getpgid", kind=kind, **kw)


class Reader:
    """A thread draining a tracer per event until stopped."""

    def __init__(self, tracer: Any) -> None:
        self.tracer = tracer
        self.count = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            for _ev in self.tracer.events(timeout=0.2):
                self.count += 1

    def finish(self) -> int:
        self.stop.set()
        self.thread.join()
        self.count += self.tracer.poll(0, lambda ev: None)
        return self.count


# (name, measure_latency, reader, wakeup_bytes).  "tracer": the built-in
# tracer with measure_latency=False -- one program per call, like the
# count-only program (the target is judged on it); "timed": the
# default measure_latency=True -- entry and exit programs paired per thread.
CONDITIONS = (("tracer, no reader", False, False, None),
              ("tracer + reader (wakeup_bytes=0)", False, True, 0),
              ("tracer + reader (default wakeup)", False, True, None),
              ("timed tracer, no reader", True, False, None),
              ("timed tracer + reader (default wakeup)", True, True, None))
ROWS = ("count-only", "floor: header-only record") + tuple(c[0] for c in CONDITIONS)


def probe_cost_section(quick: bool) -> None:
    n = 200_000 if quick else 1_000_000
    trials = 3 if quick else 5
    label = "EMULATED (qemu TCG) -- " if in_vm_matrix() else ""
    heading(f"{label}probe cost: CPU ns per getpgid() (user + system time of the loop) over "
            f"{n} calls, median of {trials} trials")
    print("   tracer = the built-in tracer of the kind (SyscallTracer, or FunctionTracer on "
          f"{FUNCTION}), one event per call,")
    print("     measure_latency=False: one program per call (at exit: args + return value);")
    print("   timed tracer = the same with measure_latency=True (the default): entry and exit "
          "programs paired per thread, + latency;")
    print("   reader = a thread reading it per event (Tracer.events()); default wakeup: "
          "a quarter of the ring")
    loop = Loop(n, trials)
    ring = 1 << max(22, (n * 128 - 1).bit_length())      # holds every event of a trial
    loop.once()                                          # warm-up, not counted
    base0 = loop.measure()
    print(f"   {'no probe':<44} {base0:8.1f} ns/call")
    kinds: Dict[str, Any] = {}
    for kind in KINDS:
        row: Dict[str, Any] = {}
        try:
            obj, hits = count_only(kind)
        except (NotSupportedError, PytracersError) as e:
            reason = getattr(e, "reason", str(e))
            print(f"   {kind}: not available on this kernel ({reason})")
            kinds[kind] = {"unavailable": reason}
            continue
        with obj:
            row["count-only"] = loop.measure()
            fired = hits()
        if fired < n * trials:
            sys.exit(f"bench/run: the {kind} count program fired {fired} times for "
                     f"{n * trials} calls")
        global FLOOR_RING
        FLOOR_RING = ring
        obj, hits = count_only(kind, "floor")
        with obj:
            row["floor: header-only record"] = loop.measure(hits)
            fired = hits()
        if fired < n * trials:
            sys.exit(f"bench/run: the {kind} floor program emitted {fired} records for "
                     f"{n * trials} calls")
        for name, timed, reading, wakeup in CONDITIONS:
            with tracer(kind, ring_size=ring, wakeup_bytes=wakeup,
                        measure_latency=timed) as tr:
                if not reading:
                    drained = [0]

                    def drain(tr: Any = tr, drained: List[int] = drained) -> None:
                        drained[0] += tr.poll(0, lambda ev: None)
                    ns = loop.measure(drain)
                    got = drained[0]
                else:
                    rd = Reader(tr)

                    def caught_up(tr: Any = tr) -> None:
                        # let the reader catch up between trials (not timed),
                        # so no trial runs against a full ring
                        deadline = time.monotonic() + 120
                        while tr.ring.pending_bytes() and time.monotonic() < deadline:
                            time.sleep(0.01)
                    ns = loop.measure(caught_up)
                    got = rd.finish()
                lost = tr.lost
            if lost or got < n * trials:
                print(f"   warning: {kind} {name}: {got} events read, {lost} lost "
                      f"for {n * trials} calls")
            row[name] = ns
            row[name + " irq_work/1000"] = loop.irq_work
        base = loop.measure()
        bl = (base0 + base) / 2
        added = {k: row[k] - bl for k in ROWS}
        row["no probe, after"] = base
        row["added"] = added
        kinds[kind] = row
        print(f"   {kind}:")
        for k in ROWS:
            iw = row.get(k + " irq_work/1000")
            print(f"     {k:<42} {row[k]:8.1f} ns/call   added {added[k]:7.1f} ns"
                  + (f"   wakeup interrupts {iw:6.2f} per 1000 calls" if iw is not None else ""))
        print(f"     {'(no probe, after)':<42} {base:8.1f} ns/call")
        base0 = base
    results["sections"]["probe_cost"] = {"calls": n, "trials": trials, "kinds": kinds,
                                         "emulated": bool(in_vm_matrix())}
    t_ratios = []
    c_ratios = []
    timed_ratios = []
    for kind, row in kinds.items():
        if "added" not in row:
            continue
        a = row["added"]
        if a["count-only"] > 0:
            t_ratios.append((kind, a["tracer, no reader"] / a["count-only"]))
            timed_ratios.append((kind, a["timed tracer, no reader"] / a["count-only"]))
        if a["tracer, no reader"] > 0:
            c_ratios.append((kind, a["tracer + reader (default wakeup)"] / a["tracer, no reader"]))
    floors = [(k, r["added"]["floor: header-only record"], r["added"]) for k, r in kinds.items()
              if "added" in r]
    if floors:
        print("   floor (one header-only record per call) / count-only: " +
              ", ".join(f"{k} {f / a['count-only']:.2f}x" for k, f, a in floors
                        if a["count-only"] > 0))
        print("   tracer / floor: " +
              ", ".join(f"{k} {a['tracer, no reader'] / f:.2f}x" for k, f, a in floors if f > 0) +
              "  (what the tracer adds beyond emitting a record at all)")
    if timed_ratios:
        print("   timed tracer (two programs per call + pairing) / count-only: " +
              ", ".join(f"{k} {r:.2f}x" for k, r in timed_ratios) + "  (not a target)")
    if t_ratios:
        worst = max(r for _, r in t_ratios)
        target("tracer_vs_count", worst, worst <= 1.5,
               ", ".join(f"{k} {r:.2f}x" for k, r in t_ratios))
    if c_ratios:
        worst = max(r for _, r in c_ratios)
        target("consumer_vs_none", worst, worst <= 2.0,
               ", ".join(f"{k} {r:.2f}x" for k, r in c_ratios))


# ---- 3. start -> attached -------------------------------------------------------------------

PYTRACERS_SCRIPT = """\
import time
_t = [("script", time.monotonic_ns())]
import sys
from pytracers.tracers import SyscallTracer
_t.append(("import", time.monotonic_ns()))
t = SyscallTracer("getpgid", kind="tp", pid=int(sys.argv[1]))
_t.append(("attached", time.monotonic_ns()))
for name, ns in _t:
    print("T", name, ns)
for ev in t.events():
    print(ev.ts_ns, flush=True)
    break
t.close()
"""

BPFTRACE_PROG = ('tracepoint:syscalls:sys_enter_getpgid /pid == {pid}/ '
                 '{{ printf("%lld\\n", nsecs); exit(); }}')


def first_event(cmd: List[str], env: Optional[Dict[str, str]] = None
                ) -> Tuple[float, Dict[str, float]]:
    """Spawn ``cmd``; (ms from spawn to the first event's kernel timestamp,
    {mark: ms from spawn} for the "T name ns" lines it printed before).
    The timestamp is a line of digits, or a JSON line's "ts_ns" (the CLI's
    ``--json``: that process is then stopped with SIGTERM, as Ctrl-C would)."""
    t0 = time.monotonic_ns()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env)
    ts = None
    marks: Dict[str, float] = {}
    assert p.stdout is not None
    try:
        for line in p.stdout:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "T":
                marks[parts[1]] = (int(parts[2]) - t0) / 1e6
            elif len(parts) == 1 and parts[0].isdigit():
                ts = int(parts[0])
                break
            elif line.startswith("{"):
                ts = int(json.loads(line)["ts_ns"])
                # no reader left: a write blocked on a full pipe fails (EPIPE)
                # instead of outlasting the SIGTERM
                p.stdout.close()
                p.terminate()
                break
    finally:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if ts is None:
        err = p.stderr.read() if p.stderr else ""
        raise RuntimeError(f"{cmd[0]} printed no event: {err.strip()[-500:]}")
    return (ts - t0) / 1e6, marks


def start_section(quick: bool) -> None:
    trials = 3 if quick else 10
    heading(f"start -> probe attached (first event's kernel timestamp - spawn time), "
            f"median of {trials}")
    bpftrace = shutil.which("bpftrace")
    trigger = subprocess.Popen([build("sysloop"), "tick", "100"], stdin=subprocess.PIPE)
    try:
        script = os.path.join(BUILD, "start_pytracers.py")
        os.makedirs(BUILD, exist_ok=True)
        with open(script, "w") as f:
            f.write(PYTRACERS_SCRIPT)
        # Byte-compiled modules cached as an installed package would have them
        # (PYTHONDONTWRITEBYTECODE would recompile every module at each start).
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(PYTHONPATH=REPO, PYTHONPYCACHEPREFIX=os.path.join(BUILD, "pycache"))
        py_cmd = [sys.executable, script, str(trigger.pid)]
        bt_cmd = [bpftrace, "-e", BPFTRACE_PROG.format(pid=trigger.pid)] if bpftrace else None
        # the CLI as users start it: the installed console script (else -m)
        console = os.path.join(os.path.dirname(sys.executable), "pytracers")
        cli_cmd = ([sys.executable, console] if os.path.exists(console) else
                   [sys.executable, "-m", "pytracers"])
        cli_cmd += ["trace", "syscall:getpgid", "-p", str(trigger.pid), "--json"]
        # the floor: the same object, programs and tracepoints from Python with
        # nothing but cffi and libbpf's declarations (bench/start_floor.py)
        floor_cmd = [sys.executable, os.path.join(HERE, "start_floor.py"),
                     os.path.dirname(pytracers.__file__), pytracers.object_path("syscalls"),
                     str(trigger.pid)]
        # one untimed round each: page cache, tracefs mount
        first_event(py_cmd, env)
        first_event(cli_cmd, env)
        first_event(floor_cmd, env)
        if bt_cmd:
            first_event(bt_cmd)
        py: List[float] = []
        cli: List[float] = []
        bt: List[float] = []
        bare: List[float] = []
        bare_s: List[float] = []
        floor: List[float] = []
        argparse_s: List[float] = []
        inproc: List[float] = []
        marks: Dict[str, List[float]] = {}
        for _ in range(trials):
            ms, m = first_event(py_cmd, env)
            py.append(ms)
            for k, v in m.items():
                marks.setdefault(k, []).append(v)
            if bt_cmd:
                bt.append(first_event(bt_cmd)[0])
            cli.append(first_event(cli_cmd, env)[0])
            floor.append(first_event(floor_cmd, env)[0])
            t0 = time.monotonic_ns()
            subprocess.run([sys.executable, "-c", "pass"], check=True, env=env)
            bare.append((time.monotonic_ns() - t0) / 1e6)
            t0 = time.monotonic_ns()
            subprocess.run([sys.executable, "-S", "-c", "pass"], check=True, env=env)
            bare_s.append((time.monotonic_ns() - t0) / 1e6)
            t0 = time.monotonic_ns()
            subprocess.run([sys.executable, "-c", "import argparse"], check=True, env=env)
            argparse_s.append((time.monotonic_ns() - t0) / 1e6)
        # A process that is already running Python with pytracers imported (a
        # monitoring agent adding a probe): SyscallTracer() -> first event.
        # One untimed round first (imports, page cache).
        for i in range(trials + 1):
            t0 = time.monotonic_ns()
            tr = pytracers.SyscallTracer("getpgid", kind="tp", pid=trigger.pid)
            try:
                ev = next(iter(tr.events(timeout=10)), None)
            finally:
                tr.close()
            if ev is None:
                raise RuntimeError("in-process SyscallTracer saw no event in 10 s")
            if i:
                inproc.append((ev.ts_ns - t0) / 1e6)
    finally:
        assert trigger.stdin is not None
        trigger.stdin.close()
        trigger.wait()
    p_ms = median(py)
    print(f"   {'pytracers (SyscallTracer, tp, Python script)':<48} {p_ms:8.1f} ms   "
          f"(range {min(py):.1f}-{max(py):.1f})")
    m = {k: median(v) for k, v in marks.items()}
    if {"script", "import", "attached"} <= set(m):
        print(f"     {'interpreter start':<46} {m['script']:8.1f} ms")
        print(f"     {'import pytracers.tracers':<46} {m['import'] - m['script']:8.1f} ms")
        # the constructor attaches, then makes the ring's reader: the first
        # event (a 100 us trigger) may come before it returns
        print(f"     {'SyscallTracer() -> first event':<46} {p_ms - m['import']:8.1f} ms")
        print(f"     {'SyscallTracer() returned':<46} {m['attached'] - m['import']:8.1f} ms")
    c_ms = median(cli)
    print(f"   {'pytracers trace syscall:getpgid --json (CLI)':<48} {c_ms:8.1f} ms   "
          f"(range {min(cli):.1f}-{max(cli):.1f})")
    row: Dict[str, Any] = {"pytracers_ms": py, "cli_ms": cli, "python_bare_ms": bare,
                           "python_S_bare_ms": bare_s, "pytracers_marks_ms": m,
                           "in_process_ms": inproc, "floor_ms": floor,
                           "python_argparse_ms": argparse_s}
    b_ms = median(bt) if bt else None
    if b_ms:
        print(f"   {'bpftrace one-liner':<48} {b_ms:8.1f} ms   (range {min(bt):.1f}-{max(bt):.1f})")
        print(f"   {'ratio CLI / bpftrace':<48} {c_ms / b_ms:8.3f}")
        print(f"   {'ratio Python script / bpftrace':<48} {p_ms / b_ms:8.3f}")
        row["bpftrace_ms"] = bt
    else:
        print("   bpftrace: not installed")

    def vs_bpftrace(ms: float) -> str:
        return f"   ({ms / b_ms:.3f}x bpftrace)" if b_ms else ""
    print("   floor: the interpreter alone, spawn to exit (same run, same environment)")
    for label, xs in (("python -S -c pass", bare_s), ("python -c pass", bare),
                      ("python -c 'import argparse'", argparse_s)):
        print(f"     {label:<46} {median(xs):8.1f} ms{vs_bpftrace(median(xs))}")
    print("   floor: the same object, programs and tracepoints from Python with cffi and\n"
          "   libbpf's declarations only (bench/start_floor.py), spawn -> first event")
    print(f"     {'start_floor.py':<46} {median(floor):8.1f} ms{vs_bpftrace(median(floor))}"
          f"   (range {min(floor):.1f}-{max(floor):.1f})")
    print(f"   in-process: SyscallTracer() -> first event in an already running Python\n"
          f"   process with pytracers imported (an agent adding a probe), median of {trials}")
    i_ms = median(inproc)
    print(f"     {'SyscallTracer(tp) -> first event':<46} {i_ms:8.1f} ms{vs_bpftrace(i_ms)}"
          f"   (range {min(inproc):.1f}-{max(inproc):.1f}; vs bpftrace's process start)")
    if b_ms:
        target("start", c_ms / b_ms, c_ms / b_ms <= 0.5, f"{c_ms / b_ms:.3f}x "
               f"({c_ms:.0f} ms vs {b_ms:.0f} ms)")
        target("start_inproc", i_ms / b_ms, i_ms / b_ms <= 0.15, f"{i_ms / b_ms:.3f}x "
               f"({i_ms:.1f} ms vs {b_ms:.0f} ms)")
    results["sections"]["start"] = row


# ---- 4. map reads --------------------------------------------------------------------------

def maps_section(quick: bool) -> None:
    n = 100_000
    reps = 3 if quick else 7
    heading(f"map read: a hash of {n:,} entries, 8-byte keys and values (bench/maps.bpf.o), "
            f"median of {reps}; entries per second of the reader's CPU time")
    import numpy as np
    with pytracers.open(os.path.join(HERE, "maps.bpf.o")).load() as obj:
        m = obj.maps["bench_hash"]
        keys = np.arange(n, dtype=np.uint64)
        m.update_batch(keys, keys * 3)
        rows: Dict[str, float] = {}

        def timed(fn: Callable[[], int]) -> float:
            rates = []
            for _ in range(reps):
                t0 = time.thread_time()
                got = fn()
                dt = time.thread_time() - t0
                if got != n:
                    raise SystemExit(f"bench/run: map read returned {got} entries, not {n}")
                rates.append(n / dt)
            return median(rates)

        def batch_arrays() -> int:
            b = m.lookup_batch()
            if int(b.values.sum()) != int(keys.sum()) * 3:
                raise SystemExit("bench/run: batch read returned wrong values")
            return len(b)

        rows["lookup_batch() (numpy arrays)"] = timed(batch_arrays)
        rows["lookup_batch().to_dict()"] = timed(lambda: len(m.lookup_batch().to_dict()))
        per = timed(lambda: sum(1 for _ in m.items())) if not quick else None
        if quick:           # the per-entry path takes seconds: one pass
            t0 = time.thread_time()
            got = sum(1 for _ in m.items())
            per = got / (time.thread_time() - t0)
        rows["items() (per entry: get_next_key + lookup)"] = per
        path = m.last_batch_path
    print(f"   {'path':<46} {'entries/s':>12}")
    for what, rate in rows.items():
        print(f"   {what:<46} {fmt_rate(rate):>12}")
    print(f"   (batch path used: {path}; x per-entry: "
          f"{rows['lookup_batch() (numpy arrays)'] / per:.0f}x)")
    results["sections"]["maps"] = {"entries": n, "rates": rows, "batch_path": path}
    best = rows["lookup_batch() (numpy arrays)"]
    target("map_batch", best, best >= TARGETS["map_batch"][2],
           f"{fmt_rate(best)} (lookup_batch, {n:,} entries)")


# ---- main -------------------------------------------------------------------------------------

def _user_section(name: str) -> Callable[[bool], None]:
    def run(quick: bool) -> None:
        import user       # bench/user.py: the user-space sections
        user.B = sys.modules[__name__]
        getattr(user, name)(quick)
    return run


def ringloss_section(quick: bool) -> None:
    """bench/ringloss.py: the reservations a reader used to make fail (the
    ring positions stored with struct.pack_into), side by side with the fix."""
    import ringloss
    calls, trials, rounds = (200_000, 1, 1) if quick else (1_000_000, 3, 2)
    heading("ring-buffer loss with room in the ring: per-event reader, ring positions as "
            "single 8-byte accesses vs struct (before the fix), alternating")
    results["sections"]["ringloss"] = {
        "calls": calls, "trials": trials, "rounds": rounds,
        "totals": ringloss.measure(calls, trials, "1,3,2,4", rounds,
                                   sysloop=build("sysloop", optional=True))}


def _bpftrace_section(quick: bool) -> None:
    bench_bpftrace.B = sys.modules[__name__]
    bench_bpftrace.section(quick)


SECTIONS = {"drain": drain_section, "perf": perf_section, "drain-parts": drain_parts_section,
            "probe-cost": probe_cost_section,
            "start": start_section, "maps": maps_section,
            "uprobe": _user_section("uprobe_section"),
            "usdt": _user_section("usdt_section"),
            "symbols": _user_section("symbols_section"),
            "symbolize": lambda quick: bench_stacks.symbolize_section(quick, target, heading,
                                                                      results),
            "profile": lambda quick: bench_stacks.profile_section(quick, target, heading,
                                                                  results, BUILD),
            "stack-cost": lambda quick: bench_stacks.stack_cost_section(quick, target, heading,
                                                                        results, BUILD),
            "ringloss": ringloss_section,
            "bpftrace": _bpftrace_section}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short run (smaller rings, "
                    "fewer repetitions)")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help="comma-separated sections: " + ", ".join(SECTIONS))
    ap.add_argument("--json", metavar="FILE", help="also write every figure here")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    for s in only:
        if s not in SECTIONS:
            ap.error(f"unknown section {s!r}; choose from {', '.join(SECTIONS)}")
    import logging
    # libbpf's warnings for the kinds this kernel refuses are reported in the
    # tables; keep them off the output.
    logging.getLogger("pytracers.libbpf").setLevel(logging.ERROR)
    if os.geteuid() != 0:
        sys.exit("bench/run: needs root (loads BPF programs)")
    info = machine()
    results["machine"] = info
    results["command"] = "bench/run " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"pytracers bench -- {info['cpu']}, {info['cpus']} CPUs, kernel {info['kernel']}"
          f"{' (EMULATED: qemu TCG guest)' if info['emulated'] else ''}, Python {info['python']},"
          f" numpy {info['numpy']}, libbpf {info['libbpf']}")
    print(f"{info['load']}; mode: {'quick' if args.quick else 'full'}")
    for s in only:
        SECTIONS[s](args.quick)
    if results["targets"]:
        print()
        print("== targets (issues 6, 13, 14, 15 and 16)")
        for key, t in results["targets"].items():
            print(f"   {t['what']:<38} {t['goal']:<24} measured {t['measured']:<40} "
                  f"{'MET' if t['met'] else 'NOT MET'}")
    results["load_end"] = load_line()
    print(f"\n({load_line()})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
