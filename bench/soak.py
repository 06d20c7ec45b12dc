"""Endurance run: the agent and a tracer under a storm of execs and syscalls.

    bench/soak                      30 minutes (the default)
    bench/soak --minutes 5
    bench/soak --seconds 8 --interval 1 --warmup 3     the short run CI makes

Three processes, started by this one (which lowers its priority first,
``--nice``, so the children inherit it):

* the agent (``python -m pytracers.agent``) tracing execve(2) and getpgid(2)
  of processes named ``pyt-soakPID`` (``--comm``: the storm's name, with this
  run's pid, so nothing else on the machine adds events) and serving /metrics
  on 127.0.0.1;
* a tracer (``SyscallTracer(["getpgid"], comm=...)``, this file run with
  ``--role tracer``) reading each event through a Python callback;
* the storm (``--role storm``, under that name): ``--exec-rate`` execs a
  second (posix_spawn of /bin/true; every ``--fail-every``-th one of a path
  that does not exist, a failed execve) and ``--syscall-rate`` getpgid(2)
  calls a second, both paced by the clock, counting exactly what it made.

Every ``--interval`` seconds (default 10) it samples, for the agent and the
tracer: RSS, open fds, the BPF programs, maps and links the process holds
(ids read from /proc/PID/fdinfo) and CPU time; and the counters: what the
storm made so far, what each reader delivered and what its kernel side
counted as lost.  After ``--duration``, the storm stops, the readers drain,
and the run fails (exit 1, saying which check) if

* RSS grew more than ``--rss-limit-mb`` (5) between the end of the warm-up
  (``--warmup``, default 120 s) and any later sample;
* the fds or the kernel objects of a process changed at any sample;
* for any source (agent exec, agent getpgid, tracer getpgid),
  produced != delivered + lost.

The samples go to ``--out`` (default bench/_soak/): samples.csv (one row
per process per sample) and summary.json (the figures and the checks).
"""
from __future__ import annotations

import argparse
import csv
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any, Dict, List, Optional

COMM = "pyt-soak"          # + the run's pid: two runs at once do not see each other
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PR_SET_NAME = 15
TRUE = "/bin/true"
MISSING = "/nonexistent/pyt-soak-missing"


# ---- what a process holds ----------------------------------------------------------------

def proc_sample(pid: int) -> Dict[str, Any]:
    """RSS (kB), fds, BPF object ids held, CPU seconds of process ``pid``."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    ids: Dict[str, set] = {"prog": set(), "map": set(), "link": set()}
    fds = 0
    d = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(d):
        fds += 1
        try:
            with open(f"{d}/{fd}") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in ("prog_id", "map_id", "link_id"):
                        ids[key[:-3]].add(int(value))
        except OSError:       # closed meanwhile
            pass
    from pytracers.user import procfs
    cpu = procfs.cpu_seconds(pid)
    if cpu is None:
        raise ProcessLookupError(f"process {pid} is gone")
    return {"rss_kb": rss, "fds": fds, "progs": sorted(ids["prog"]),
            "maps": sorted(ids["map"]), "links": sorted(ids["link"]), "cpu_s": cpu}


# ---- the storm ---------------------------------------------------------------------------

def _set_comm(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NAME, name.encode(), 0, 0, 0)


def storm(args: argparse.Namespace) -> int:
    """Make execs and getpgid calls at the given rates until SIGTERM; print
    the totals (JSON) on stdout.  Progress goes to ``--status`` every second."""
    _set_comm(args.comm)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    counts = {"execs_ok": 0, "execs_failed": 0, "getpgid": 0}
    tick = 0.01
    t0 = time.monotonic()
    last_status = 0.0
    n_exec = 0
    getpgid = os.getpgid
    while not stop:
        now = time.monotonic() - t0
        due = int(now * args.syscall_rate) - counts["getpgid"]
        for _ in range(min(due, args.syscall_rate)):    # at most 1 s worth in one go
            getpgid(0)
        counts["getpgid"] += max(0, min(due, args.syscall_rate))
        due = min(int(now * args.exec_rate) - n_exec, max(1, args.exec_rate // 10))
        for _ in range(max(0, due)):
            n_exec += 1
            fail = args.fail_every and n_exec % args.fail_every == 0
            try:
                os.posix_spawn(MISSING if fail else TRUE, [TRUE], {})
                counts["execs_ok"] += 1
            except OSError:
                counts["execs_failed"] += 1
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
        if now - last_status >= 1.0:
            last_status = now
            _write_json(args.status, counts)
        time.sleep(max(0.0, tick - ((time.monotonic() - t0) - now)))
    try:
        while True:
            os.waitpid(-1, 0)
    except ChildProcessError:
        pass
    _write_json(args.status, counts)
    print(json.dumps(counts), flush=True)
    return 0


def _write_json(path: Optional[str], obj: Any) -> None:
    if not path:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path) as f:
            return dict(json.load(f))
    except (OSError, ValueError):
        return {}


# ---- the tracer --------------------------------------------------------------------------

def tracer(args: argparse.Namespace) -> int:
    """A SyscallTracer read event by event through a callback, until SIGTERM;
    writes {"seen", "delivered", "lost"} to ``--status`` every second."""
    sys.path.insert(0, REPO)
    from pytracers.tracers import SyscallTracer
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    seen = [0]

    def count(ev: Any) -> None:
        if ev.comm == args.comm:
            seen[0] += 1

    with SyscallTracer(["getpgid"], comm=args.comm) as t:
        def status() -> None:
            _write_json(args.status, {"seen": seen[0], "delivered": t.delivered,
                                      "lost": t.lost, "kind": t.kind, "ready": True})
        status()
        last = time.monotonic()
        while not stop:
            t.poll(0.2, count)
            if time.monotonic() - last >= 1.0:
                last = time.monotonic()
                status()
        while t.poll(0, count):
            pass
        status()
    return 0


# ---- the run -----------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(url: str) -> Dict[str, float]:
    """{'events:exec': n, 'lost:exec': n, 'execs': sum, 'exec_failures': sum, ...}"""
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out: Dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "pytracers_events_total":
                out["events:" + s.labels["tracer"]] = s.value
            elif s.name == "pytracers_lost_events_total":
                out["lost:" + s.labels["tracer"]] = s.value
            elif s.name in ("pytracers_execs_total", "pytracers_exec_failures_total"):
                key = s.name[len("pytracers_"):-len("_total")]
                out[key] = out.get(key, 0) + s.value
            elif s.name == "pytracers_syscalls_total" and s.labels.get("syscall") == "getpgid":
                out["getpgid"] = out.get("getpgid", 0) + s.value
    return out


def _wait_for(pred: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise SystemExit(f"soak: timed out waiting for {what}")
        time.sleep(0.1)


def run(args: argparse.Namespace) -> int:
    duration = args.seconds if args.seconds is not None else args.minutes * 60
    warmup = args.warmup if args.warmup is not None else min(120.0, duration / 3)
    os.makedirs(args.out, exist_ok=True)
    if args.nice:
        os.nice(args.nice)
    # SIGTERM unwinds like Ctrl-C, so the children are stopped (the finally below)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit("soak: terminated"))
    py = sys.executable
    me = os.path.abspath(__file__)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    tracer_status = os.path.join(args.out, "tracer.status.json")
    storm_status = os.path.join(args.out, "storm.status.json")
    for p in (tracer_status, storm_status):
        if os.path.exists(p):
            os.unlink(p)
    port = _free_port()
    comm = f"{COMM}{os.getpid()}"[:15]
    url = f"http://127.0.0.1:{port}/metrics"
    procs: Dict[str, subprocess.Popen] = {}
    failures: List[str] = []
    rows: List[Dict[str, Any]] = []
    try:
        agent_err = open(os.path.join(args.out, "agent.stderr"), "w+")
        procs["agent"] = subprocess.Popen(
            [py, "-m", "pytracers.agent", "--listen", f"127.0.0.1:{port}", "--comm", comm,
             "--syscalls", "getpgid"], env=env, stderr=agent_err, stdout=subprocess.DEVNULL)
        procs["tracer"] = subprocess.Popen([py, me, "--role", "tracer", "--status", tracer_status,
                                            "--comm", comm], env=env)

        def agent_up() -> bool:
            if procs["agent"].poll() is not None:
                agent_err.seek(0)
                raise SystemExit("soak: the agent exited: " + agent_err.read())
            agent_err.seek(0)
            return "serving" in agent_err.read()
        _wait_for(agent_up, 120, "the agent")
        _wait_for(lambda: _read_json(tracer_status).get("ready", False)
                  or procs["tracer"].poll() is not None, 120, "the tracer")
        if procs["tracer"].poll() is not None:
            raise SystemExit("soak: the tracer exited")
        # the agent says it serves before its event loop (and that loop's
        # fds) exists: let both settle so the first sample is the base
        _scrape(url)
        time.sleep(2.0)
        procs["storm"] = subprocess.Popen(
            [py, me, "--role", "storm", "--status", storm_status, "--comm", comm,
             "--exec-rate", str(args.exec_rate), "--syscall-rate", str(args.syscall_rate),
             "--fail-every", str(args.fail_every)], env=env, stdout=subprocess.PIPE)
        t0 = time.monotonic()
        print(f"soak: {duration:g} s, sampling every {args.interval:g} s, warm-up {warmup:g} s; "
              f"storm {args.exec_rate} execs/s, {args.syscall_rate} getpgid/s; out {args.out}",
              file=sys.stderr, flush=True)
        prev_cpu: Dict[str, float] = {}
        prev_t = 0.0
        next_t = 0.0
        while True:
            now = time.monotonic() - t0
            if now >= next_t:
                rows.extend(_sample(procs, now, prev_t, prev_cpu, url, storm_status, tracer_status))
                prev_t = now
                next_t += args.interval
                if not args.quiet:
                    _print_progress(rows[-2:])
            if now >= duration:
                break
            for name, p in procs.items():
                if p.poll() is not None:
                    raise SystemExit(f"soak: the {name} exited early (status {p.returncode})")
            time.sleep(min(0.5, max(0.0, next_t - (time.monotonic() - t0))))

        # stop the storm, let the readers drain, stop them
        procs["storm"].send_signal(signal.SIGTERM)
        out, _ = procs["storm"].communicate(timeout=60)
        produced = json.loads(out.decode().strip().splitlines()[-1])
        n_exec = produced["execs_ok"] + produced["execs_failed"]

        def drained() -> bool:
            m = _scrape(url)
            ts = _read_json(tracer_status)
            return (m.get("events:exec", 0) + m.get("lost:exec", 0) >= n_exec
                    and m.get("events:syscalls", 0) + m.get("lost:syscalls", 0)
                    >= produced["getpgid"]
                    and ts.get("delivered", 0) + ts.get("lost", 0) >= produced["getpgid"])
        try:
            _wait_for(drained, 15, "the readers to drain")
        except SystemExit as e:
            failures.append(str(e))
        time.sleep(1.0)       # anything beyond the count would show up now
        now = time.monotonic() - t0
        rows.extend(_sample(procs, now, prev_t, prev_cpu, url, storm_status, tracer_status))
        final = _scrape(url)
        procs["tracer"].send_signal(signal.SIGTERM)
        procs["tracer"].wait(timeout=60)
        tfinal = _read_json(tracer_status)
        procs["agent"].send_signal(signal.SIGTERM)
        procs["agent"].wait(timeout=60)
        if procs["agent"].returncode != 0:
            failures.append(f"the agent exited with status {procs['agent'].returncode}")
        if procs["tracer"].returncode != 0:
            failures.append(f"the tracer exited with status {procs['tracer'].returncode}")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()

    summary = _check(rows, produced, final, tfinal, warmup, args, failures)
    summary.update(duration_s=duration, warmup_s=warmup, interval_s=args.interval,
                   exec_rate=args.exec_rate, syscall_rate=args.syscall_rate,
                   fail_every=args.fail_every, nice=args.nice,
                   load_avg=list(os.getloadavg()), kernel=os.uname().release,
                   tracer_kind=tfinal.get("kind"))
    _write_csv(os.path.join(args.out, "samples.csv"), rows)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    _report(summary)
    return 1 if summary["failures"] else 0


def _sample(procs: Dict[str, subprocess.Popen], now: float, prev_t: float,
            prev_cpu: Dict[str, float], url: str, storm_status: str,
            tracer_status: str) -> List[Dict[str, Any]]:
    """One row per reader process.  /proc is read before the scrape, so the
    scrape's connection is never among the agent's fds."""
    found = {name: proc_sample(procs[name].pid) for name in ("agent", "tracer")}
    made = _read_json(storm_status)
    m = _scrape(url)
    ts = _read_json(tracer_status)
    rows = []
    for name, s in found.items():
        dt = now - prev_t
        cpu_pct = (100.0 * (s["cpu_s"] - prev_cpu[name]) / dt
                   if name in prev_cpu and dt > 0 else 0.0)
        prev_cpu[name] = s["cpu_s"]
        row = {"t_s": round(now, 2), "process": name, "rss_kb": s["rss_kb"], "fds": s["fds"],
               "progs": len(s["progs"]), "maps": len(s["maps"]), "links": len(s["links"]),
               "object_ids": " ".join(f"{k}{i}" for k in ("prog", "map", "link")
                                      for i in s[k + "s"]),
               "cpu_s": round(s["cpu_s"], 2), "cpu_pct": round(cpu_pct, 2),
               "made_execs": made.get("execs_ok", 0) + made.get("execs_failed", 0),
               "made_getpgid": made.get("getpgid", 0)}
        if name == "agent":
            row.update(delivered_exec=int(m.get("events:exec", 0)),
                       lost_exec=int(m.get("lost:exec", 0)),
                       delivered_getpgid=int(m.get("events:syscalls", 0)),
                       lost_getpgid=int(m.get("lost:syscalls", 0)))
        else:
            row.update(delivered_exec="", lost_exec="",
                       delivered_getpgid=int(ts.get("delivered", 0)),
                       lost_getpgid=int(ts.get("lost", 0)))
        rows.append(row)
    return rows


def _print_progress(rows: List[Dict[str, Any]]) -> None:
    print("  " + "; ".join(
        f"{r['t_s']:7.1f}s {r['process']}: RSS {r['rss_kb'] / 1024:.1f} MB, {r['fds']} fds, "
        f"{r['progs']}p/{r['maps']}m/{r['links']}l, CPU {r['cpu_pct']:.1f}%, "
        f"getpgid {r['delivered_getpgid']}/{r['made_getpgid']}" for r in rows),
        file=sys.stderr, flush=True)


def _check(rows: List[Dict[str, Any]], produced: Dict[str, int], final: Dict[str, float],
           tfinal: Dict[str, Any], warmup: float, args: argparse.Namespace,
           failures: List[str]) -> Dict[str, Any]:
    procs: Dict[str, Any] = {}
    for name in ("agent", "tracer"):
        mine = [r for r in rows if r["process"] == name]
        warm = [r for r in mine if r["t_s"] >= warmup] or mine[-1:]
        base = warm[0]
        growth_mb = (max(r["rss_kb"] for r in warm) - base["rss_kb"]) / 1024
        end_growth_mb = (mine[-1]["rss_kb"] - base["rss_kb"]) / 1024
        fds = sorted({r["fds"] for r in mine})
        objects = sorted({r["object_ids"] for r in mine})
        busy = [r["cpu_pct"] for r in mine[1:-1]] or [0.0]
        procs[name] = {
            "rss_start_mb": round(mine[0]["rss_kb"] / 1024, 2),
            "rss_after_warmup_mb": round(base["rss_kb"] / 1024, 2),
            "rss_end_mb": round(mine[-1]["rss_kb"] / 1024, 2),
            "rss_max_growth_after_warmup_mb": round(growth_mb, 2),
            "rss_end_growth_after_warmup_mb": round(end_growth_mb, 2),
            "fds": fds, "progs": sorted({r["progs"] for r in mine}),
            "maps": sorted({r["maps"] for r in mine}),
            "links": sorted({r["links"] for r in mine}),
            "object_id_sets": len(objects),
            "cpu_s": mine[-1]["cpu_s"],
            "cpu_pct_mean": round(sum(busy) / len(busy), 2), "cpu_pct_max": max(busy),
            "samples": len(mine)}
        if growth_mb > args.rss_limit_mb:
            failures.append(f"{name}: RSS grew {growth_mb:.2f} MB after the warm-up "
                            f"(limit {args.rss_limit_mb} MB)")
        if len(fds) != 1:
            failures.append(f"{name}: open fds changed: {fds}")
        if len(objects) != 1:
            failures.append(f"{name}: BPF objects held changed: {objects}")
    n_exec = produced["execs_ok"] + produced["execs_failed"]
    sources = {
        "agent exec": (n_exec, final.get("events:exec", 0), final.get("lost:exec", 0)),
        "agent getpgid": (produced["getpgid"], final.get("events:syscalls", 0),
                          final.get("lost:syscalls", 0)),
        "tracer getpgid": (produced["getpgid"], tfinal.get("delivered", 0),
                           tfinal.get("lost", 0)),
    }
    accounting = {}
    for name, (made, delivered, lost) in sources.items():
        accounting[name] = {"produced": int(made), "delivered": int(delivered),
                            "lost": int(lost)}
        if made != delivered + lost:
            failures.append(f"{name}: produced {made} != delivered {int(delivered)} "
                            f"+ lost {int(lost)}")
    # what the agent exported per label adds up to what it read
    checks = {"agent execs_total": (final.get("execs", 0), produced["execs_ok"]),
              "agent exec_failures_total": (final.get("exec_failures", 0),
                                            produced["execs_failed"]),
              "agent syscalls_total{getpgid}": (final.get("getpgid", 0), produced["getpgid"]),
              "tracer callback count": (tfinal.get("seen", 0), produced["getpgid"])}
    lost_any = any(v[2] for v in sources.values())
    for name, (got, made) in checks.items():
        accounting[name] = {"counted": int(got), "produced": int(made)}
        if not lost_any and got != made:
            failures.append(f"{name}: {int(got)} counted, {made} produced (nothing lost)")
    return {"processes": procs, "accounting": accounting, "failures": failures,
            "produced": produced}


def _write_csv(path: str, rows: List[Dict[str, Any]]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _report(s: Dict[str, Any]) -> None:
    err = sys.stderr
    print(f"soak: {s['duration_s']:g} s (warm-up {s['warmup_s']:g} s), kernel {s['kernel']}, "
          f"load {' '.join('%.2f' % x for x in s['load_avg'])}", file=err)
    for name, p in s["processes"].items():
        print(f"  {name}: RSS {p['rss_start_mb']} MB at start, {p['rss_after_warmup_mb']} after "
              f"warm-up, {p['rss_end_mb']} at end (max growth {p['rss_max_growth_after_warmup_mb']}"
              f" MB); fds {p['fds']}; progs {p['progs']} maps {p['maps']} links {p['links']}; "
              f"CPU {p['cpu_s']} s, {p['cpu_pct_mean']}% mean, {p['cpu_pct_max']}% max", file=err)
    for name, a in s["accounting"].items():
        print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in a.items()), file=err)
    for f in s["failures"]:
        print(f"soak: FAILED: {f}", file=err)
    if not s["failures"]:
        print("soak: passed", file=err)
    err.flush()


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="bench/soak", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--minutes", type=float, default=30.0, help="duration (default 30)")
    p.add_argument("--seconds", type=float, help="duration in seconds (overrides --minutes)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--warmup", type=float,
                   help="seconds before RSS is taken as the base (default min(120, 1/3 of "
                        "the run))")
    p.add_argument("--exec-rate", type=int, default=200, help="execs a second (default 200)")
    p.add_argument("--syscall-rate", type=int, default=20000,
                   help="getpgid(2) calls a second (default 20000)")
    p.add_argument("--fail-every", type=int, default=10,
                   help="every Nth exec is of a missing file (a failed execve; 0: never)")
    p.add_argument("--rss-limit-mb", type=float, default=5.0,
                   help="RSS growth allowed after the warm-up (default 5)")
    p.add_argument("--nice", type=int, default=10, help="niceness added (default 10)")
    p.add_argument("--out", default=os.path.join(HERE, "_soak"),
                   help="where samples.csv and summary.json go (default bench/_soak)")
    p.add_argument("--quiet", action="store_true", help="no line per sample")
    p.add_argument("--role", choices=("run", "storm", "tracer"), default="run",
                   help=argparse.SUPPRESS)
    p.add_argument("--status", help=argparse.SUPPRESS)
    p.add_argument("--comm", default=COMM, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role == "storm":
        return storm(args)
    if args.role == "tracer":
        return tracer(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
