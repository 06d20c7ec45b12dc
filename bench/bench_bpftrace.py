"""bench/run --only bpftrace: pytracers side by side with bpftrace at equal
work, on the same loops, in one run (issue 16).

Every row runs the same way.  The loop (bench/sysloop.c ``count N``, or
bench/uloop.c) is started stopped; the tool is started with a filter on the
loop's pid and says it is attached ("armed": bpftrace's BEGIN probe, which
it runs once every probe is attached; pytracers' scripts after the tracer
is built); the loop is let go; when it ends, the bench waits until the
tool's output stops growing, then stops the tool.  Both tools write their
lines to a pipe the bench reads and counts (the same sink for both), and
the bench reads each tool's CPU time from /proc/PID/task/*/schedstat
around the loop.

  added ns per call = (loop CPU + tool CPU) / calls - the bare loop's ns/call

so the kernel side (the BPF programs run in the loop's syscalls), the
wake-ups and the reader's work all count.  Conditions alternate round by
round (A B C ... A B C ...) and the medians are reported; a row's
delivered/lost are those of its median round's burst.

per-event   one record per call, one text line per record, 3 M calls:
            bpftrace ``tracepoint:syscalls:sys_exit_getpgid { printf(...) }``
            with ts, pid, tid, cpu, comm, syscall id and return value (a
            perf-buffer record per call, formatted in C++) vs
            - pytracers' SyscallTracer (measure_latency=False: one program
              per call, at exit; its record also carries the six argument
              registers) read by Python per event (poll + callback
              formatting the same seven fields);
            - ``pytracers trace syscall:getpgid --no-latency --json`` (the
              CLI: whole batches formatted at once, cli/jsonbatch.py);
            - the timed pair (entry + exit, latency): bpftrace with a per-
              thread start map vs ``pytracers trace syscall:getpgid --json``.
            Buffer memory is made equal: bpftrace's perf buffers
            (BPFTRACE_PERF_RB_PAGES per CPU) hold as many bytes in all as
            pytracers' ring: 4 MiB, the CLI's trace ring (the library's
            default is 256 KiB; the reader script is given 4 MiB too).
            Then the loss again at the rate bpftrace's own burst ran at
            (its per-event wake-ups slow the traced loop): ``sysloop rate``,
            a third of the calls.
aggregate   counts and a latency histogram kept in the kernel, nothing per
            call to user space: SyscallStats (per process and syscall:
            calls, errors, total, max, log2-linear histogram) vs bpftrace
            ``@s[tid] = nsecs`` at entry, ``@[comm] = count(); @h =
            hist(nsecs - @s[tid]); delete(@s[tid])`` at exit.
uprobe      one record per call of bench/uloop.c's pt_loop, a text line
            each: UserFunctionTracer(kind="uprobe") read per event vs
            bpftrace ``uprobe:...:pt_loop { printf(ts, pid, tid, cpu, comm,
            arg0) }``.
The profiler's side by side with bpftrace is bench/bench_stacks.py's
(``--only profile``), not repeated here.
"""
from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

TARGETS = {
    "bt_per_event": ("per-event tracer added cost", "<= 0.7x bpftrace printf", 0.7),
    "bt_per_event_lost": ("per-event: lost during the burst", "<= bpftrace's", 1.0),
    "bt_aggregate": ("in-kernel stats added cost", "<= 1.0x bpftrace count+hist", 1.0),
    "cli_json_rate": ("CLI JSON lines formatter", ">= 1 M events/s", 1e6),
    "cli_json_lost": ("trace --json: lost during the burst", "<= bpftrace printf's", 1.0),
}

B: Any = None              # bench.py's module (helpers, results), set before a section runs

FIELDS_FMT = '"%llu %d %d %d %s %d %d\\n", nsecs, pid, tid, cpu, comm'

LIB_SCRIPT = """\
import os, signal, sys
sys.path.insert(0, {repo!r})
from pytracers.tracers import SyscallTracer, UserFunctionTracer
pid = int(sys.argv[2])
kw = {{"ring_size": int(os.environ["PT_BENCH_RING"])}} if os.environ.get("PT_BENCH_RING") else {{}}
if sys.argv[1] == "syscall":
    t = SyscallTracer("getpgid", kind="tp", pid=pid, measure_latency=False, **kw)
    def cb(ev, w=sys.stdout.write):
        w(f"{{ev.ts_ns}} {{ev.pid}} {{ev.tid}} {{ev.cpu}} {{ev.comm}} {{ev.id}} {{ev.ret}}\\n")
else:
    t = UserFunctionTracer(sys.argv[3], "pt_loop", pid=pid, kind="uprobe", **kw)
    def cb(ev, w=sys.stdout.write):
        w(f"{{ev.ts_ns}} {{ev.pid}} {{ev.tid}} {{ev.cpu}} {{ev.comm}} {{ev.args[0]}}\\n")
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
print("armed", flush=True)
while not stop:
    if t.poll(0.1, cb):
        sys.stdout.flush()
t.poll(0.0, cb)
sys.stdout.flush()
print("LOST", t.lost, file=sys.stderr, flush=True)
t.close()
"""

STATS_SCRIPT = """\
import signal, sys
sys.path.insert(0, {repo!r})
from pytracers.tracers import SyscallStats
t = SyscallStats("getpgid", kind="tp", pid=int(sys.argv[1]))
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
print("armed", flush=True)
signal.sigwait([signal.SIGTERM])
calls = sum(c.calls for c in t.snapshot().values())
print("COUNTED", calls, "LOST", t.lost, file=sys.stderr, flush=True)
t.close()
"""


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` so far (schedstat: ns on CPU)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    except OSError:
        pass
    return total


class Paused:
    """The loop started and stopped before it runs (a shell that stops
    itself, then execs the loop), so a tool can filter on its pid."""

    def __init__(self, cmd: List[str]) -> None:
        self.proc = subprocess.Popen(["/bin/sh", "-c", 'kill -STOP $$; exec "$0" "$@"', *cmd],
                                     stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        for _ in range(2000):
            with open(f"/proc/{self.pid}/stat") as f:
                if f.read().rpartition(")")[2].split()[0] == "T":
                    return
            time.sleep(0.001)

    def run(self) -> Tuple[float, float]:
        """(CPU ns per call, wall ns per call) of the loop."""
        os.kill(self.pid, signal.SIGCONT)
        out, _ = self.proc.communicate(timeout=900)
        assert self.proc.returncode == 0, out
        cpu, wall = out.split()[:2]
        return float(cpu), float(wall)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Tool:
    """A tool process whose stdout lines are counted (stderr kept) until
    it prints "armed"."""

    def __init__(self, cmd: List[str], env: Optional[Dict[str, str]] = None,
                 armed_on_stderr: Optional[bytes] = None) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env)
        self.lines = 0
        self.lost = 0
        self.err = bytearray()
        self.out_tail = bytearray()
        self.armed = threading.Event()
        self.marker = armed_on_stderr
        self._t = [threading.Thread(target=self._read_out, daemon=True),
                   threading.Thread(target=self._read_err, daemon=True)]
        for t in self._t:
            t.start()

    def _read_out(self) -> None:
        """Count the lines; bpftrace's "Lost N events" lines count as lost."""
        import re
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        first = self.marker is None
        partial = b""
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                return
            data = partial + b
            cut = data.rfind(b"\n") + 1
            data, partial = data[:cut], data[cut:]
            if first and b"armed\n" in data:
                first = False
                data = data.replace(b"armed\n", b"", 1)
                self.armed.set()
            lost = re.findall(rb"^Lost (\d+) events$", data, re.M) if b"Lost " in data else []
            self.lost += sum(int(x) for x in lost)
            self.lines += data.count(b"\n") - len(lost)
            self.out_tail = (self.out_tail + data)[-65536:]

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while True:
            b = os.read(fd, 65536)
            if not b:
                return
            self.err += b
            if self.marker is not None and self.marker in self.err:
                self.armed.set()

    def wait_armed(self, timeout: float = 120.0) -> None:
        if not self.armed.wait(timeout):
            self.stop()
            raise RuntimeError(f"{self.proc.args[0]} never attached: {bytes(self.err[-500:])!r}")

    def settle(self, expect: int, quiet: float = 0.5, limit: float = 120.0) -> None:
        """Wait until ``expect`` lines came or the output stopped growing."""
        deadline = time.monotonic() + limit
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline and self.lines < expect:
            if self.lines != last:
                last, since = self.lines, time.monotonic()
            elif time.monotonic() - since > quiet:
                return
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for t in self._t:
            t.join(timeout=30)
        return bytes(self.err).decode("utf-8", "replace") + \
            bytes(self.out_tail).decode("utf-8", "replace")


def lost_in(text: str, how: str) -> int:
    """Lost events as each tool reports them."""
    import re
    if how == "bpftrace":               # on stdout, counted as it streamed (Tool.lost)
        return -1
    if how == "cli":                    # "... N events seen, M lost in ..."
        m = re.search(r"(\d+) events? seen, (\d+) lost", text)
        return int(m.group(2)) if m else -1
    m = re.search(r"LOST (\d+)", text)
    return int(m.group(1)) if m else -1


def one_round(loop_cmd: List[str], n: int, tool_cmd: Callable[[int], List[str]],
              how: str, env: Optional[Dict[str, str]] = None,
              marker: Optional[bytes] = None, lines: bool = True) -> Dict[str, Any]:
    p = Paused(loop_cmd)
    tool = Tool(tool_cmd(p.pid), env=env, armed_on_stderr=marker)
    try:
        tool.wait_armed()
        c0 = cpu_ns(tool.proc.pid)
        loop_ns, wall_ns = p.run()
        if lines:
            tool.settle(n)
        c1 = cpu_ns(tool.proc.pid)
        text = tool.stop(signal.SIGINT if how == "cli" else signal.SIGTERM)
    finally:
        p.kill()
        if tool.proc.poll() is None:
            tool.stop(signal.SIGKILL)
    row = {"loop_ns": loop_ns, "rate": 1e9 / wall_ns, "tool_ns": (c1 - c0) / n, "total_ns": loop_ns + (c1 - c0) / n,
           "delivered": tool.lines,
           "lost": tool.lost if how == "bpftrace" else lost_in(text, how)}
    if how == "stats":
        import re
        m = re.search(r"COUNTED (\d+) LOST (\d+)", text)
        row["delivered"], row["lost"] = (int(m.group(1)), int(m.group(2))) if m else (-1, -1)
    elif how == "bpftrace-agg":
        import re
        m = re.search(r"@\[[^\]]*\]: (\d+)", text)
        row["delivered"], row["lost"] = (int(m.group(1)) if m else -1), 0
    return row


def bare_round(loop_cmd: List[str], n: int) -> Dict[str, Any]:
    r = subprocess.run(loop_cmd, capture_output=True, text=True, check=True)
    ns, wall = (float(x) for x in r.stdout.split()[:2])
    return {"loop_ns": ns, "rate": 1e9 / wall, "tool_ns": 0.0, "total_ns": ns, "delivered": 0, "lost": 0}


def run_table(title: str, n: int, rounds: int, conds: Dict[str, Callable[[], Dict[str, Any]]]
              ) -> Dict[str, Dict[str, Any]]:
    """Alternate the conditions round by round; medians per condition."""
    got: Dict[str, List[Dict[str, Any]]] = {k: [] for k in conds}
    for r in range(rounds):
        for k, fn in conds.items():
            try:
                got[k].append(fn())
            except (RuntimeError, AssertionError, subprocess.CalledProcessError) as e:
                print(f"   {k}: round {r + 1} failed: {e}")
    out: Dict[str, Dict[str, Any]] = {}
    bare = statistics.median(x["total_ns"] for x in got["bare loop"]) if got.get("bare loop") \
        else 0.0
    print(f"   {title}")
    print(f"   {'condition':<62} {'loop':>7} {'tool':>7} {'added':>7}  {'calls/s':>9} "
          f"{'delivered':>9} {'lost':>9}  (ns per call; medians of {rounds})")
    for k, xs in got.items():
        if not xs:
            continue
        tot = [x["total_ns"] for x in xs]
        med = statistics.median(tot)
        mid = min(xs, key=lambda x: abs(x["total_ns"] - med))
        row = {"loop_ns": statistics.median(x["loop_ns"] for x in xs),
               "tool_ns": statistics.median(x["tool_ns"] for x in xs),
               "rate": statistics.median(x["rate"] for x in xs),
               "total_ns": med, "added_ns": med - bare,
               "delivered": mid["delivered"], "lost": mid["lost"],
               "rounds": xs}
        out[k] = row
        print(f"   {k:<62} {row['loop_ns']:7.0f} {row['tool_ns']:7.0f} {row['added_ns']:7.0f}  "
              f"{row['rate']:9.0f} {row['delivered']:>9} {row['lost']:>9}")
    return out


def section(quick: bool) -> None:
    bt = shutil.which("bpftrace")
    n = 300_000 if quick else 3_000_000
    rounds = 3
    B.heading(f"side by side with bpftrace at equal work (issue 16): {n:,} getpgid calls per "
              f"burst, pid-filtered, conditions alternating, medians of {rounds} rounds; "
              "CPU ns per call of the loop + the tool")
    if bt is None:
        print("   bpftrace: not installed (scripts/setup --dev installs it)")
        return
    sysloop = B.build("sysloop")
    loop = [sysloop, "count", str(n)]
    os.makedirs(B.BUILD, exist_ok=True)
    lib = os.path.join(B.BUILD, "bt_lib.py")
    with open(lib, "w") as f:
        f.write(LIB_SCRIPT.format(repo=B.REPO))
    stats = os.path.join(B.BUILD, "bt_stats.py")
    with open(stats, "w") as f:
        f.write(STATS_SCRIPT.format(repo=B.REPO))
    py = sys.executable
    env = dict(os.environ, PYTHONPATH=B.REPO, PT_BENCH_RING=str(4 << 20))
    ring = 4 << 20                       # the CLI's trace ring (cli/trace.py RING_BYTES)
    cpus = os.cpu_count() or 1
    rb_pages = max(1, ring // (os.sysconf("SC_PAGE_SIZE") * cpus))
    bt_env = dict(os.environ, BPFTRACE_PERF_RB_PAGES=str(rb_pages))

    def bt_cmd(prog: str) -> Callable[[int], List[str]]:
        return lambda pid: [bt, "-e", 'BEGIN { printf("armed\\n"); } ' + prog.replace("PID",
                                                                                    str(pid))]
    exit_printf = ("tracepoint:syscalls:sys_exit_getpgid /pid == PID/ { printf(" + FIELDS_FMT +
                   ", args->__syscall_nr, args->ret); }")
    timed_printf = ("tracepoint:syscalls:sys_enter_getpgid /pid == PID/ { @s[tid] = nsecs; "
                    "@a[tid] = args->pid; } tracepoint:syscalls:sys_exit_getpgid /@s[tid]/ "
                    '{ printf("%llu %d %d %d %s %d %d %llu %d\\n", nsecs, pid, tid, cpu, comm, '
                    "args->__syscall_nr, args->ret, nsecs - @s[tid], @a[tid]); "
                    "delete(@s[tid]); delete(@a[tid]); }")
    cli = [py, "-m", "pytracers", "trace", "syscall:getpgid", "--json", "--pid"]
    ready = b"Ctrl-C to stop"
    per_event = {
        "bare loop": lambda: bare_round(loop, n),
        "bpftrace printf at exit (7 fields)":
            lambda: one_round(loop, n, bt_cmd(exit_printf), "bpftrace", env=bt_env),
        "pytracers SyscallTracer(no latency), Python reader per event":
            lambda: one_round(loop, n, lambda pid: [py, lib, "syscall", str(pid)], "lib",
                              env=env),
        "pytracers trace --no-latency --json (CLI, batches)":
            lambda: one_round(loop, n, lambda pid: [*cli, str(pid), "--no-latency"], "cli",
                              env=env, marker=ready),
        "bpftrace printf, timed (entry map + exit, 9 fields)":
            lambda: one_round(loop, n, bt_cmd(timed_printf), "bpftrace", env=bt_env),
        "pytracers trace --json (CLI, timed pair, batches)":
            lambda: one_round(loop, n, lambda pid: [*cli, str(pid)], "cli", env=env,
                              marker=ready),
    }
    print(f"   buffers: pytracers ring {ring >> 10} KiB; bpftrace BPFTRACE_PERF_RB_PAGES="
          f"{rb_pages} x {cpus} CPUs = {rb_pages * cpus * os.sysconf('SC_PAGE_SIZE') >> 10} KiB")
    pe = run_table("per-event output (a line per call into a counted pipe)", n, rounds, per_event)

    # Loss at the same event rate: bpftrace's per-event wake-ups slow the
    # traced loop down (its CPU per call above), so its burst comes slower.
    # The same number of calls again, paced to the rate bpftrace's printf
    # burst ran at, for every tool.
    b_rate = pe.get("bpftrace printf at exit (7 fields)", {}).get("rate")
    same: Dict[str, Dict[str, Any]] = {}
    pn = n if quick else n // 3
    if b_rate:
        paced = [sysloop, "rate", str(pn), f"{b_rate:.0f}"]
        same = run_table(f"loss at bpftrace's rate: {pn:,} calls paced to {b_rate:,.0f}/s "
                         "(CPU figures include the loop's spinning: read only the loss)",
                         pn, rounds, {
                             "bpftrace printf at exit (7 fields)":
                                 lambda: one_round(paced, pn, bt_cmd(exit_printf), "bpftrace",
                                                   env=bt_env),
                             "pytracers SyscallTracer(no latency), Python reader per event":
                                 lambda: one_round(paced, pn, lambda pid: [py, lib, "syscall",
                                                                          str(pid)], "lib",
                                                   env=env),
                             "pytracers trace --no-latency --json (CLI, batches)":
                                 lambda: one_round(paced, pn, lambda pid: [*cli, str(pid),
                                                                          "--no-latency"],
                                                   "cli", env=env, marker=ready)})

    agg_prog = ("tracepoint:syscalls:sys_enter_getpgid /pid == PID/ { @s[tid] = nsecs; } "
                "tracepoint:syscalls:sys_exit_getpgid /@s[tid]/ { @[comm] = count(); "
                "@h = hist(nsecs - @s[tid]); delete(@s[tid]); }")
    agg = {
        "bare loop": lambda: bare_round(loop, n),
        "bpftrace @[comm] = count(); @h = hist(latency)":
            lambda: one_round(loop, n, bt_cmd(agg_prog), "bpftrace-agg", lines=False),
        "pytracers SyscallStats (calls, errors, total, max, histogram)":
            lambda: one_round(loop, n, lambda pid: [py, stats, str(pid)], "stats", env=env,
                              lines=False),
    }
    ag = run_table("aggregation in the kernel (nothing per call to user space)", n, rounds, agg)

    un = n // 10
    uloop = B.build("uloop")
    uloop_cmd = [uloop, str(un)]
    up_prog = (f"uprobe:{uloop}:pt_loop /pid == PID/ {{ printf(\"%llu %d %d %d %s %d\\n\", "
               "nsecs, pid, tid, cpu, comm, arg0); }")
    up = {
        "bare loop": lambda: bare_round(uloop_cmd, un),
        "bpftrace uprobe printf (6 fields)":
            lambda: one_round(uloop_cmd, un, bt_cmd(up_prog), "bpftrace", env=bt_env),
        "pytracers UserFunctionTracer(kind=uprobe), Python reader":
            lambda: one_round(uloop_cmd, un, lambda pid: [py, lib, "uprobe", str(pid), uloop],
                              "lib", env=env),
    }
    uu = run_table(f"uprobe: {un:,} calls of pt_loop (bench/uloop.c), a line per call", un,
                   rounds, up)
    print("   the profiler beside bpftrace's profile:99 one-liner: bench/run --only profile "
          "(bench/bench_stacks.py)")
    rate = formatter_rate(quick)
    B.results["sections"]["bpftrace"] = {"calls": n, "rounds": rounds, "per_event": pe,
                                         "aggregate": ag, "uprobe": uu, "same_rate": same,
                                         "cli_json_formatter_per_s": rate,
                                         "bpftrace_rb_pages": rb_pages}
    b = pe.get("bpftrace printf at exit (7 fields)")
    lib_row = pe.get("pytracers SyscallTracer(no latency), Python reader per event")
    cli_row = pe.get("pytracers trace --no-latency --json (CLI, batches)")
    if b and lib_row and b["added_ns"] > 0:
        best = min(lib_row["added_ns"], cli_row["added_ns"] if cli_row else float("inf"))
        r = best / b["added_ns"]
        B.target("bt_per_event", r, r <= 0.7,
                 f"{r:.2f}x ({best:.0f} vs {b['added_ns']:.0f} ns; reader per event "
                 f"{lib_row['added_ns']:.0f}, CLI {cli_row['added_ns'] if cli_row else -1:.0f})")
    sb = same.get("bpftrace printf at exit (7 fields)")
    sl = same.get("pytracers SyscallTracer(no latency), Python reader per event")
    sc = same.get("pytracers trace --no-latency --json (CLI, batches)")
    if b and lib_row:
        shown = f"full speed {lib_row['lost']:,} vs bpftrace {b['lost']:,} of {n:,}"
        ok = 0 <= lib_row["lost"] <= max(b["lost"], 0)
        if sb and sl:
            shown += f"; at bpftrace's rate {sl['lost']:,} vs {sb['lost']:,} of {pn:,}"
            ok = 0 <= sl["lost"] <= max(sb["lost"], 0)
        B.target("bt_per_event_lost", lib_row["lost"], ok, shown)
    if b and cli_row:
        shown = f"full speed {cli_row['lost']:,} vs bpftrace {b['lost']:,} of {n:,}"
        ok = 0 <= cli_row["lost"] <= max(b["lost"], 0)
        if sb and sc:
            shown += f"; at bpftrace's rate {sc['lost']:,} vs {sb['lost']:,} of {pn:,}"
            ok = 0 <= sc["lost"] <= max(sb["lost"], 0)
        B.target("cli_json_lost", cli_row["lost"], ok, shown)
    ba = ag.get("bpftrace @[comm] = count(); @h = hist(latency)")
    sa = ag.get("pytracers SyscallStats (calls, errors, total, max, histogram)")
    if ba and sa and ba["added_ns"] > 0:
        r = sa["added_ns"] / ba["added_ns"]
        B.target("bt_aggregate", r, r <= 1.0,
                 f"{r:.2f}x ({sa['added_ns']:.0f} vs {ba['added_ns']:.0f} ns)")
    B.target("cli_json_rate", rate, rate >= 1e6, f"{rate / 1e6:.2f} M events/s")


def formatter_rate(quick: bool) -> float:
    """The CLI's batch JSON formatter alone: getpgid-like records of a
    storm (one process, cpu alternating, latency and ts varying), 64 K per
    batch as the CLI takes them; events per second of CPU time."""
    import numpy as np
    from pytracers.cli import jsonbatch as J
    dt = np.dtype([("ts_ns", "<u8"), ("pid", "<u4"), ("tid", "<u4"), ("cpu", "<u4"),
                   ("_kstack", "<i2"), ("_ustack", "<i2"), ("comm", "S16"), ("id", "<i8"),
                   ("ret", "<i8"), ("latency_ns", "<u8"), ("args", "<u8", (6,))])
    n = 65536
    rows = np.zeros(n, dt)
    rows["ts_ns"] = 10**13 + np.arange(n, dtype=np.uint64) * 317
    rows["pid"] = rows["tid"] = 4242
    rows["cpu"] = np.arange(n) % 2
    rows["comm"] = b"sysloop"
    rows["id"] = 121
    rows["ret"] = 4242
    rows["latency_ns"] = 200 + (np.arange(n, dtype=np.uint64) * 7919) % 3000
    head = J.record_parts(dt, ["ts_ns", "pid", "tid", "cpu", "comm", "id", "ret"])
    assert head is not None
    fmt = J.BatchJson([J.Literal('{"event": "syscall", "time": '),
                       J.Time("ts_ns", time.time_ns() - time.monotonic_ns()), J.Literal(", "),
                       *head, J.Literal(', "latency_ns": '), J.Int("latency_ns"),
                       J.Literal(", "), J.Table(["id", "args"],
                                                lambda r, i: b'"args": {"pid": 0}, '
                                                             b'"name": "getpgid"'),
                       J.Literal("}\n")])
    fmt.format(rows)                         # the buffer, the tables
    reps = 10 if quick else 40
    rates = []
    with open(os.devnull, "wb") as sink:
        for _ in range(reps):
            t0 = time.thread_time()
            sink.write(fmt.format(rows))
            rates.append(n / (time.thread_time() - t0))
    r = statistics.median(rates)
    # the per-event path on the same records, decoding left out: a dict per
    # record (as event_dict + the CLI make it) and output.dumps
    from pytracers.cli.output import dumps
    off = time.time_ns() - time.monotonic_ns()
    m = 20000
    recs = rows[:m].tolist()
    t0 = time.thread_time()
    with open(os.devnull, "w") as sink:
        for ts, pid, tid, cpu, _k, _u, comm, nr, ret, lat, _a in recs:
            sink.write(dumps({"event": "syscall", "time": round((ts + off) / 1e9, 6),
                              "ts_ns": ts, "pid": pid, "tid": tid, "cpu": cpu,
                              "comm": comm.decode(), "id": nr, "ret": ret, "latency_ns": lat,
                              "args": {"pid": 0}, "name": "getpgid"}) + "\n")
    per = m / (time.thread_time() - t0)
    print(f"   CLI JSON batch formatter alone (+ one write to /dev/null per batch of {n}): "
          f"{r / 1e6:.2f} M events/s, median of {reps} (CPU time); the per-event path's "
          f"dict + dumps alone (no decoding): {per / 1e6:.2f} M/s")
    B.results.setdefault("sections", {})["cli_json_per_event_per_s"] = per
    return r
