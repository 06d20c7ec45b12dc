"""bench/run sections of issue 15: symbolisation rate, the sampling profiler's
cost and its side-by-side with bpftrace (imported by bench.py)."""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict

import numpy as np

TARGETS = {
    "symbolize_kernel": ("symbolise kernel addresses (loaded)", ">= 1 M addresses/s", 1e6),
    "symbolize_user": ("symbolise libc addresses (loaded)", ">= 1 M addresses/s", 1e6),
}


def _rate(fn: Callable[[], Any], n: int, reps: int = 5) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def symbolize_section(quick: bool, target: Callable[..., None], heading: Callable[[str], None],
                      results: Dict[str, Any]) -> None:
    from pytracers.symbolize import ProcessSymbols, elf_symbols, kernel_symbols
    heading("symbolisation (issue 15): addresses -> names once the tables are loaded")
    n = 200_000 if quick else 1_000_000
    rng = np.random.default_rng(1)
    t = time.perf_counter()
    k = kernel_symbols(refresh=True)
    kload = time.perf_counter() - t
    t = time.perf_counter()
    starts = k.table.starts
    kbulk = time.perf_counter() - t
    addrs = rng.choice(starts, n) + np.uint64(7)
    kr = _rate(lambda: k.names_of(addrs), n)
    print(f"   kernel: {len(k)} symbols; kallsyms read and its lines sorted in "
          f"{kload * 1e3:.0f} ms, the bulk (numpy) table parsed from them in "
          f"{kbulk * 1e3:.0f} ms; {kr / 1e6:.2f} M addresses/s ({n} random text addresses, "
          "names_of)")
    libc = next(m.path for m in ProcessSymbols(os.getpid()).maps or ()
                if os.path.basename(m.path).startswith("libc.so"))
    t = time.perf_counter()
    e = elf_symbols(libc)
    uload = time.perf_counter() - t
    ua = rng.choice(e.table.starts, n) + np.uint64(3)
    names = np.asarray([e.name(i) for i in range(len(e))] + ["[unknown]"], dtype=object)

    def user() -> Any:
        idx, _ = e.table.find(ua)
        return names[idx]
    ur = _rate(user, n)
    print(f"   user:   {libc}: {len(e)} symbols loaded in {uload * 1e3:.0f} ms; "
          f"{ur / 1e6:.2f} M addresses/s (table.find + names)")
    ps = ProcessSymbols(os.getpid())
    m = min(n, 100_000)
    fr = _rate(lambda: ps.symbolize(ua[:m] + np.uint64(0)), m, reps=2)
    print(f"   frames: ProcessSymbols.symbolize of raw addresses, Frame objects: "
          f"{fr / 1e6:.2f} M addresses/s (addresses not mapped here: path exercised, names not)")
    results["sections"]["symbolize"] = {"kernel_rate": kr, "user_rate": ur, "frames_rate": fr,
                                        "kernel_load_s": kload, "kernel_bulk_table_s": kbulk,
                                        "user_load_s": uload}
    target("symbolize_kernel", kr, kr >= 1e6, f"{kr / 1e6:.2f} M/s")
    target("symbolize_user", ur, ur >= 1e6, f"{ur / 1e6:.2f} M/s")


# ---- the profiler: added CPU, and side by side with bpftrace ------------------------------

SPIN_C = r"""
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
volatile unsigned long sink;
static volatile sig_atomic_t stop;
static unsigned long rounds;
static void on_term(int s) { (void)s; stop = 1; }
__attribute__((noinline)) void hot_function(void) {
    for (unsigned long i = 0; i < 10000; i++) sink += i * i;
}
__attribute__((noinline)) void middle_function(void) { hot_function(); sink++; }
int main(void) {
    signal(SIGTERM, on_term);
    while (!stop) { middle_function(); rounds++; }
    printf("%lu\n", rounds);
    return 0;
}
"""

TARGETS.update({
    "profile_cpu": ("profiler at 99 Hz, 2 busy CPUs: added CPU", "<= 1% of one CPU", 0.01),
    "profile_vs_bpftrace_cpu": ("profiler CPU vs bpftrace's, same run", "<= bpftrace's", 1.0),
    "profile_vs_bpftrace_start": ("start -> perf events open, vs bpftrace", "<= bpftrace's", 1.0),
    "profile_top_frame": ("same top user frame as bpftrace", "hot_function in both", 1.0),
})


def _spin_binary(build_dir: str) -> str:
    import hashlib
    import subprocess
    os.makedirs(build_dir, exist_ok=True)
    src = os.path.join(build_dir, "spin_fp.c")
    exe = os.path.join(build_dir, "spin_fp-" + hashlib.sha256(SPIN_C.encode()).hexdigest()[:12])
    if not os.path.exists(exe):
        with open(src, "w") as f:
            f.write(SPIN_C)
        subprocess.run(["gcc", "-O0", "-fno-omit-frame-pointer", "-o", exe, src], check=True)
    return exe


def _spinners(exe: str, n: int) -> Any:
    import subprocess
    procs = [subprocess.Popen([exe], stdout=subprocess.PIPE, text=True) for _ in range(n)]
    return procs, time.perf_counter()


def _stop_spinners(sp: Any) -> float:
    """Rounds of hot_function per second, all spinners together."""
    import signal
    procs, t0 = sp
    for p in procs:
        p.send_signal(signal.SIGTERM)
    wall = time.perf_counter() - t0
    return sum(int(p.communicate()[0].strip() or 0) for p in procs) / wall


def _perf_fds(pid: int) -> int:
    n = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[perf_event]":
                    n += 1
            except OSError:
                pass
    except OSError:
        pass
    return n


def _task_cpu_ns(pid: int) -> int:
    """CPU time of all of a process's threads so far (ns, from each thread's
    schedstat); threads that have exited are not counted."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def _run_tool(cmd: "list[str]", seconds: float, ncpu: int) -> Dict[str, Any]:
    """Run a profiler command; time from spawn to its perf events being open on
    every CPU, its CPU time (user+sys, whole life), its CPU per second while
    sampling (threads' schedstat from 1 s after the events opened to 1 s
    before the end: no start or end costs), and its output."""
    import resource
    import signal
    import subprocess
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    opened = None
    while p.poll() is None and time.perf_counter() - t0 < 30:
        if _perf_fds(p.pid) >= ncpu:
            opened = time.perf_counter() - t0
            break
        time.sleep(0.001)
    sampling = None
    if opened is not None:
        if seconds >= 4:
            time.sleep(1.0)
            c0, w0 = _task_cpu_ns(p.pid), time.perf_counter()
            time.sleep(seconds - 2.0)
            c1, w1 = _task_cpu_ns(p.pid), time.perf_counter()
            sampling = (c1 - c0) / 1e9 / (w1 - w0)
            time.sleep(1.0)
        else:
            time.sleep(seconds)
    if cmd[0].endswith("bpftrace"):
        p.send_signal(signal.SIGINT)
    try:
        out, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        # (bpftrace has taken longer than this to print its map on a loaded
        # machine): kill it rather than leave it and the spinners running
        p.kill()
        out, err = p.communicate()
        err += "\n(bench: killed after 120 s)"
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"start_s": opened, "cpu_s": cpu, "sampling_cpu": sampling, "out": out, "err": err,
            "rc": p.returncode}


def _bpftrace_top(out: str, comm: str) -> "tuple[Dict[str, int], int]":
    """Innermost user frame -> count, for ``comm``'s entries of bpftrace's
    ``@[kstack, ustack, comm]`` map."""
    tops: Dict[str, int] = {}
    total = 0
    for chunk in out.split("@[")[1:]:
        head, _, tail = chunk.rpartition("]: ")
        try:
            n = int(tail.split()[0])
        except (ValueError, IndexError):
            continue
        import re
        parts = re.split(r"(?:^|\n),", head)     # kstack, ustack, comm
        if len(parts) < 3 or parts[-1].strip() != comm:
            continue
        total += n
        user = parts[1]
        lines = [ln.strip() for ln in user.splitlines() if ln.strip()]
        name = lines[0].split("+")[0] if lines else "(none)"
        tops[name] = tops.get(name, 0) + n
    return tops, total


def _prog_runtime_ns(fd: int) -> "tuple[int, int]":
    """run_time_ns and run_cnt of the program behind ``fd`` (its fdinfo;
    kernel.bpf_stats_enabled must be on)."""
    from pytracers.kernel import introspect
    info = introspect.fdinfo(fd)
    return int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0))


def profile_section(quick: bool, target: Callable[..., None], heading: Callable[[str], None],
                    results: Dict[str, Any], build_dir: str) -> None:
    import shutil
    import sys
    heading("sampling profiler (issue 15): 99 Hz on every CPU with every CPU busy")
    # as installed (pip writes the bytecode): a start that compiles the package
    # (PYTHONDONTWRITEBYTECODE, a fresh checkout) is not what users run
    import compileall
    import pytracers as _pt
    compileall.compile_dir(os.path.dirname(_pt.__file__), quiet=1)
    print(f"   load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    ncpu = len(os.sched_getaffinity(0))
    exe = _spin_binary(build_dir)
    seconds = 5.0 if quick else 20.0
    reps = 1 if quick else 3
    py = sys.executable
    ours = [py, "-m", "pytracers", "profile", "-d", str(seconds), "-F", "99",
            "-f", "folded", "-o", os.devnull]
    short = 2.0
    ours_short = ours[:5] + [str(short)] + ours[6:]
    rows: Dict[str, "list[Dict[str, Any]]"] = {"none": [], "pytracers": [], "pytracers_short": [],
                                              "bpftrace": []}
    have_bpftrace = shutil.which("bpftrace") is not None
    for _ in range(reps):
        # the workload alone: rounds of hot_function per second
        sp = _spinners(exe, ncpu)
        time.sleep(seconds)
        rows["none"].append({"rounds": _stop_spinners(sp)})
        sp = _spinners(exe, ncpu)
        r = _run_tool(ours, seconds, ncpu)
        r["rounds"] = _stop_spinners(sp)
        rows["pytracers"].append(r)
        sp = _spinners(exe, ncpu)
        r = _run_tool(ours_short, short, ncpu)
        r["rounds"] = _stop_spinners(sp)
        rows["pytracers_short"].append(r)
        if have_bpftrace:
            sp = _spinners(exe, ncpu)
            r = _run_tool(["bpftrace", "-e", "profile:hz:99 { @[kstack, ustack, comm] = "
                           "count(); }"], seconds, ncpu)
            r["rounds"] = _stop_spinners(sp)
            rows["bpftrace"].append(r)
    import statistics as st

    def med(name: str, key: str) -> float:
        xs = [r[key] for r in rows[name] if r.get(key) is not None]
        return st.median(xs) if xs else float("nan")
    base = med("none", "rounds")
    print(f"   workload: {ncpu} x spin_fp (hot_function), {seconds:g} s per run, {reps} runs; "
          f"alone {base:,.0f} rounds/s")
    # our CPU: the profiler process's own, plus the BPF program's run time (bpf_stats)
    stats_path = "/proc/sys/kernel/bpf_stats_enabled"
    prog_ns = prog_cnt = 0
    try:
        with open(stats_path) as f:
            old = f.read().strip()
        with open(stats_path, "w") as f:
            f.write("1")
        try:
            import pytracers
            sp = _spinners(exe, ncpu)
            with pytracers.Profiler(frequency=99) as prof:
                time.sleep(seconds)
                prog_ns, prog_cnt = _prog_runtime_ns(prof.obj.programs["profile_sample"].fd)
            _stop_spinners(sp)
        finally:
            with open(stats_path, "w") as f:
                f.write(old)
    except OSError as e:
        print(f"   (no bpf_stats: {e})")
    per_sample = prog_ns / prog_cnt if prog_cnt else float("nan")
    ours_cpu = med("pytracers", "cpu_s")
    short_cpu = med("pytracers_short", "cpu_s")
    # the process's CPU while sampling (per second), apart from its fixed start/end cost
    running = max(0.0, (ours_cpu - short_cpu) / (seconds - short))
    fixed = max(0.0, short_cpu - running * short)
    added = running + prog_ns / 1e9 / seconds
    direct = med("pytracers", "sampling_cpu")
    added_direct = direct + prog_ns / 1e9 / seconds
    whole = (ours_cpu + prog_ns / 1e9) / seconds
    print(f"   pytracers: process CPU {ours_cpu * 1e3:.0f} ms per {seconds:g} s run, "
          f"{short_cpu * 1e3:.0f} ms per {short:g} s run: {fixed * 1e3:.0f} ms fixed (start, "
          f"read, symbolise, write) + {running * 1e3:.1f} ms per second sampling; "
          f"BPF program {prog_cnt} runs, {per_sample:,.0f} ns each = {prog_ns / 1e6:.1f} ms "
          f"in {seconds:g} s")
    thr = med("pytracers", "rounds") / base if base else float("nan")
    print(f"   workload throughput with pytracers: {thr:.4f}x alone "
          "(noisy on a shared machine: for reference)")
    print(f"   added CPU while sampling: {100 * added:.2f}% of one CPU (process per second + "
          f"BPF program run time); over a whole {seconds:g} s run, start and end included: "
          f"{100 * whole:.2f}%")
    print(f"   measured directly (threads' schedstat while sampling, median): process "
          f"{direct * 1e3:.2f} ms per second; with the BPF program {100 * added_direct:.2f}% "
          f"of one CPU")
    print(f"   load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    results["sections"]["profile"] = {"rows": {k: [{kk: vv for kk, vv in r.items() if kk not in
                                                    ("out", "err")} for r in v]
                                               for k, v in rows.items()},
                                      "prog_ns": prog_ns, "prog_runs": prog_cnt,
                                      "added_cpu_fraction": added,
                                      "added_cpu_fraction_direct": added_direct}
    target("profile_cpu", added_direct, added_direct <= 0.01,
           f"{100 * added_direct:.2f}% while sampling (schedstat; {100 * added:.2f}% from "
           f"the 20 s - 2 s runs' difference); {100 * whole:.2f}% over a {seconds:g} s run")
    if not have_bpftrace:
        print("   bpftrace not installed: no comparison")
        return
    bt_cpu = med("bpftrace", "cpu_s")
    bt_start = med("bpftrace", "start_s")
    our_start = med("pytracers", "start_s")
    bthr = med("bpftrace", "rounds") / base if base else float("nan")
    print(f"   bpftrace:  process CPU {bt_cpu * 1e3:.0f} ms per run "
          f"({med('bpftrace', 'sampling_cpu') * 1e3:.2f} ms per second while sampling); "
          f"workload throughput {bthr:.4f}x alone")
    print(f"   start -> perf events open on every CPU: pytracers {our_start * 1e3:.0f} ms, "
          f"bpftrace {bt_start * 1e3:.0f} ms (medians)")
    tops, total = _bpftrace_top(rows["bpftrace"][-1]["out"], os.path.basename(exe)[:15])
    bt_top = max(tops.items(), key=lambda kv: kv[1]) if tops else ("(none)", 0)
    # ours: the same from a profile in Python
    import pytracers
    sp = _spinners(exe, ncpu)
    prof = pytracers.profile(duration=min(seconds, 5.0), frequency=99,
                             comm=os.path.basename(exe)[:15])
    _stop_spinners(sp)
    our_top = prof.top(1)[0] if prof.top(1) else ("(none)", 0)
    print(f"   top user frame of the workload: pytracers {our_top[0]} "
          f"({100 * our_top[1] / max(prof.total, 1):.0f}% of {prof.total}), bpftrace "
          f"{bt_top[0]} ({100 * bt_top[1] / max(total, 1):.0f}% of {total})")
    target("profile_vs_bpftrace_cpu", ours_cpu / bt_cpu, ours_cpu <= bt_cpu,
           f"{ours_cpu * 1e3:.0f} ms vs {bt_cpu * 1e3:.0f} ms")
    target("profile_vs_bpftrace_start", our_start / bt_start, our_start <= bt_start,
           f"{our_start * 1e3:.0f} ms vs {bt_start * 1e3:.0f} ms")
    same = our_top[0] == bt_top[0] == "hot_function"
    target("profile_top_frame", float(same), same, f"{our_top[0]} / {bt_top[0]}")


def stack_cost_section(quick: bool, target: Callable[..., None], heading: Callable[[str], None],
                       results: Dict[str, Any], build_dir: str) -> None:
    """Stack ids (bpf_get_stackid) against copies (bpf_get_stack): the run time
    per sample of bench/stack_cost.bpf.o's two programs, each alone on a
    perf event per CPU over busy frame-pointer spinners, alternating rounds."""
    import statistics as st
    from pytracers import object as _object
    heading("stack ids vs copied stacks (issue 15): run time per sample, kernel + user stack")
    ncpu = len(os.sched_getaffinity(0))
    exe = _spin_binary(build_dir)
    seconds, reps, freq = (2.0, 2, 499) if quick else (4.0, 4, 499)
    here = os.path.dirname(os.path.abspath(__file__))
    stats_path = "/proc/sys/kernel/bpf_stats_enabled"
    per: Dict[str, "list[float]"] = {"stack_by_id": [], "stack_by_copy": []}
    print(f"   load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    try:
        with open(stats_path) as f:
            old = f.read().strip()
        with open(stats_path, "w") as f:
            f.write("1")
    except OSError as e:
        print(f"   (no bpf_stats: {e})")
        return
    try:
        sp = _spinners(exe, ncpu)
        try:
            for _ in range(reps):
                for prog in per:                     # alternating: id, copy, id, copy ...
                    with _object.open(os.path.join(here, "stack_cost.bpf.o")) as o:
                        o.only(prog)
                        with o.load() as obj:
                            p = obj.programs[prog]
                            with p.attach_perf_event("cpu-clock", frequency=freq):
                                time.sleep(seconds)
                            ns, cnt = _prog_runtime_ns(p.fd)
                    if cnt:
                        per[prog].append(ns / cnt)
        finally:
            _stop_spinners(sp)
    finally:
        with open(stats_path, "w") as f:
            f.write(old)
    med = {k: st.median(v) if v else float("nan") for k, v in per.items()}
    for k, v in per.items():
        print(f"   {k:14s} {med[k]:8,.0f} ns per sample (median of {len(v)}: "
              f"{', '.join(f'{x:,.0f}' for x in v)})")
    print(f"   load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    results["sections"]["stack_cost"] = {"ns_per_sample": per, "frequency": freq,
                                         "seconds": seconds}
