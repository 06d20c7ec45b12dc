"""bench/run's user-space sections (imported by bench.py).

uprobe      CPU ns per call of pt_loop (bench/uloop.c, a tight loop of a
            noinline function) with nothing attached; with the count-only
            uprobe (bench/probe_cost.bpf.o's count_uprobe: one per-CPU add);
            with the built-in UserFunctionTracer entry-only (kind="uprobe":
            one program and one ring record per call, like the count-only
            program -- the target is judged on it) and a reader thread; with
            the default pair (uprobe + uretprobe: args, ret, latency) and a
            reader; and with bpftrace's ``uprobe:...{ @ = count(); }`` and a
            ``printf`` one-liner on the same loop, in the same run.  Every
            probe is limited to the loop's own process (pid) except
            bpftrace's, which bpftrace attaches for every process (nothing
            else runs pt_loop).  "added" = ns/call minus the bare loop's.
usdt        CPU ns per iteration of bench/usdtloop.c (a loop hitting the
            USDT probe ptbench:tick: the index and a char *) with nothing
            attached; with the count-only program on the probe's site (a
            uprobe at its address: one per-CPU add, no argument read); with
            the built-in UsdtTracer (both arguments typed from the note's
            specs, one ring record per hit) and a reader; the same reading
            the char * as a string; and with bpftrace's ``usdt:...``
            ``@ = count()`` and ``printf("%d %s", arg0, str(arg1))``.
            Conditions alternate within each round (A B C ... A B C ...);
            medians over the rounds.
symbols     Loading libc's symbol table (pyelftools, once) and looking names
            up afterwards: SymbolTable.get (a dict access) and lookup()
            (versions, several definitions, IFUNC check).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

# bench.py's module (its helpers and its results), set by bench.py before a section runs
B: Any = None


def _loop_cmd(binary: str, n: int) -> List[str]:
    return [binary, str(n)]


class Paused:
    """The loop process started, stopped before its first instruction of
    main (SIGSTOP right after exec is not possible from Python; instead the
    loop binary is started by a tiny shell that stops itself first), so a
    probe can be attached to its pid before it runs."""

    def __init__(self, binary: str, n: int) -> None:
        self.proc = subprocess.Popen(["/bin/sh", "-c", 'kill -STOP $$; exec "$0" "$@"',
                                      binary, str(n)], stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        # wait until it is stopped
        for _ in range(1000):
            with open(f"/proc/{self.pid}/stat") as f:
                if f.read().rpartition(")")[2].split()[0] == "T":
                    break
            time.sleep(0.001)

    def run(self) -> float:
        os.kill(self.pid, signal.SIGCONT)
        out, _ = self.proc.communicate(timeout=600)
        assert self.proc.returncode == 0, out
        return float(out.split()[0])


def _bare(binary: str, n: int) -> float:
    r = subprocess.run(_loop_cmd(binary, n), capture_output=True, text=True, check=True)
    return float(r.stdout.split()[0])


def _count_only(binary: str, n: int) -> Tuple[float, int]:
    p = Paused(binary, n)
    o = pytracers_open(B.PROBE_COST)
    o.only("count_uprobe")
    with o.load() as obj:
        link = obj.programs["count_uprobe"].attach_uprobe(binary, "pt_loop", pid=p.pid)
        ns = p.run()
        hits = obj.maps["counts"].sum_percpu_u64()
        link.close()
    return ns, hits


def pytracers_open(path: str) -> Any:
    import pytracers
    return pytracers.open(path)


def _tracer(binary: str, n: int, kind: Optional[str]) -> Tuple[float, int]:
    from pytracers.tracers import UserFunctionTracer
    p = Paused(binary, n)
    with UserFunctionTracer(binary, "pt_loop", pid=p.pid, kind=kind) as t:
        reader = B.Reader(t)
        ns = p.run()
        seen = reader.finish() + t.lost
    return ns, seen


def _bpftrace(binary: str, n: int, action: str, probe: Optional[str] = None,
              loop: Optional[Callable[[str, int], float]] = None) -> Tuple[float, int]:
    """The loop under a bpftrace one-liner; (ns/call, probe hits bpftrace saw:
    its count map, or the lines its printf wrote).  "Attaching N probes..."
    comes before the attach, so a second probe on the loop binary's main
    prints "armed" once everything is attached: tiny runs of the loop until
    it does."""
    bt = shutil.which("bpftrace")
    assert bt
    probe = probe or f"uprobe:{binary}:pt_loop"
    loop = loop or _bare
    prog = (f"{probe} {{ {action} }} "
            f"uprobe:{binary}:main {{ printf(\"armed\\n\"); }}")
    proc = subprocess.Popen([bt, "-e", prog], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out: List[str] = []
    armed = threading.Event()
    assert proc.stdout is not None

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("armed"):
                armed.set()
            else:
                out.append(line.strip())
    th = threading.Thread(target=drain, daemon=True)
    th.start()
    try:
        for _ in range(300):
            loop(binary, 0)
            if armed.wait(0.1):
                break
        else:
            raise RuntimeError(f"bpftrace never fired: {' / '.join(out[-3:])}")
        ns = loop(binary, n)
    finally:
        # SIGTERM: a background job (nohup, CI) may have SIGINT ignored
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        th.join(timeout=60)
    counted = [int(x.split(":")[1]) for x in out if x.startswith("@:")]
    hits = counted[0] if counted else sum(1 for x in out if x.split(" ")[0].lstrip("-").isdigit())
    return ns, hits


def uprobe_section(quick: bool) -> None:
    n = 100_000 if quick else 300_000
    trials = 3 if quick else 5
    binary = B.build("uloop")
    B.heading(f"uprobe cost: CPU ns per call of a traced user function (user + system time of "
              f"the loop) over {n} calls, median of {trials} trials")
    rows: Dict[str, Any] = {}

    def measure(name: str, fn: Callable[[], Tuple[float, int]]) -> None:
        xs, hits = [], []
        for _ in range(trials):
            ns, h = fn()
            xs.append(ns)
            hits.append(h)
        rows[name] = {"ns": B.median(xs), "trials": xs, "hits": hits}

    measure("bare loop", lambda: (_bare(binary, n), 0))
    measure("count-only uprobe", lambda: _count_only(binary, n))
    measure("tracer, entry only (kind=uprobe) + reader", lambda: _tracer(binary, n, "uprobe"))
    measure("tracer, uprobe + uretprobe (args, ret, latency) + reader",
            lambda: _tracer(binary, n, None))
    if shutil.which("bpftrace"):
        measure("bpftrace uprobe { @ = count(); }",
                lambda: _bpftrace(binary, n, "@ = count();"))
        measure('bpftrace uprobe { printf("%d\\n", arg0); }',
                lambda: _bpftrace(binary, n, 'printf("%d\\n", arg0);'))
    else:
        print("   bpftrace: not installed")
    bare = rows["bare loop"]["ns"]
    print(f"   {'condition':<58} {'ns/call':>9} {'added':>9}   hits (per trial)")
    for name, r in rows.items():
        r["added"] = r["ns"] - bare
        print(f"   {name:<58} {r['ns']:9.1f} {r['added']:9.1f}   "
              f"{','.join(str(h) for h in r['hits'])}")
    count_added = rows["count-only uprobe"]["added"]
    tr_added = rows["tracer, entry only (kind=uprobe) + reader"]["added"]
    ratio = tr_added / count_added if count_added > 0 else float("inf")
    print(f"   built-in tracer (entry only) added / count-only added: {ratio:.2f}")
    B.target("uprobe_tracer_vs_count", ratio, ratio <= 1.5,
             f"{ratio:.2f}x ({tr_added:.0f} vs {count_added:.0f} ns)")
    B.results["sections"]["uprobe"] = rows


USDT_PROBE = "ptbench:tick"
USDT_STRING = "usdt-bench"          # usdtloop.c's second argument


def _usdt_site(binary: str) -> int:
    """The file offset of ptbench:tick's site (where libbpf sets the uprobe)."""
    from pytracers.user.symbols import symbol_table
    from pytracers.user.usdt import find_probe
    off = symbol_table(binary).offset_of(find_probe(binary, USDT_PROBE).address)
    assert off is not None
    return off


def _usdt_count_only(binary: str, n: int) -> Tuple[float, int]:
    p = Paused(binary, n)
    o = pytracers_open(B.PROBE_COST)
    o.only("count_uprobe")
    with o.load() as obj:
        link = obj.programs["count_uprobe"].attach_uprobe(binary, _usdt_site(binary), pid=p.pid)
        ns = p.run()
        hits = obj.maps["counts"].sum_percpu_u64()
        link.close()
    return ns, hits


def _usdt_tracer(binary: str, n: int, strings: Tuple[int, ...]) -> Tuple[float, int]:
    from pytracers.tracers.user_usdt import UsdtTracer
    p = Paused(binary, n)
    with UsdtTracer(binary, USDT_PROBE, pid=p.pid, strings=strings) as t:
        reader = B.Reader(t)
        ns = p.run()
        seen = reader.finish() + t.lost
    return ns, seen


def _usdt_values(binary: str) -> List[Any]:
    """A 3-iteration run under the tracer with the string read: the records."""
    from pytracers.tracers.user_usdt import UsdtTracer
    p = Paused(binary, 3)
    with UsdtTracer(binary, USDT_PROBE, pid=p.pid, strings=(1,)) as t:
        p.run()
        return [tuple(e.args) for e in t.read(1.0)]


def usdt_section(quick: bool) -> None:
    n = 100_000 if quick else 300_000
    rounds = 3 if quick else 5
    binary = B.build("usdtloop")
    B.heading(f"usdt cost: CPU ns per hit of a USDT probe in a loop (user + system time of the "
              f"loop) over {n} hits; {rounds} rounds, conditions alternating, medians")
    got = _usdt_values(binary)
    print(f"   check: 3 hits under the tracer read as {got}")
    assert got == [(i, USDT_STRING) for i in range(3)], got
    conds: List[Tuple[str, Callable[[], Tuple[float, int]]]] = [
        ("bare loop (probe site is a nop)", lambda: (_loop(binary, n), 0)),
        ("count-only uprobe on the probe's site", lambda: _usdt_count_only(binary, n)),
        ("tracer, 2 int args + reader", lambda: _usdt_tracer(binary, n, ())),
        ("tracer, arg1 read as a string + reader", lambda: _usdt_tracer(binary, n, (1,))),
    ]
    if shutil.which("bpftrace"):
        usdt = f"usdt:{binary}:ptbench:tick"
        conds += [
            ("bpftrace usdt { @ = count(); }",
             lambda: _bpftrace(binary, n, "@ = count();", usdt, _loop)),
            ('bpftrace usdt { printf("%d %s\\n", arg0, str(arg1)); }',
             lambda: _bpftrace(binary, n, 'printf("%d %s\\n", arg0, str(arg1));', usdt, _loop)),
        ]
    else:
        print("   bpftrace: not installed")
    rows: Dict[str, Any] = {name: {"trials": [], "hits": []} for name, _f in conds}
    for _ in range(rounds):
        for name, fn in conds:
            ns, h = fn()
            rows[name]["trials"].append(ns)
            rows[name]["hits"].append(h)
    bare = B.median(rows[conds[0][0]]["trials"])
    print(f"   {'condition':<58} {'ns/hit':>9} {'added':>9}   hits (per round)")
    for name, r in rows.items():
        r["ns"] = B.median(r["trials"])
        r["added"] = r["ns"] - bare
        print(f"   {name:<58} {r['ns']:9.1f} {r['added']:9.1f}   "
              f"{','.join(str(h) for h in r['hits'])}")
    count_added = rows[conds[1][0]]["added"]
    for name in (conds[2][0], conds[3][0]):
        if count_added > 0:
            print(f"   {name} added / count-only added: {rows[name]['added'] / count_added:.2f}")
    for ours, theirs in ((conds[2][0], conds[4][0] if len(conds) > 4 else None),
                         (conds[3][0], conds[5][0] if len(conds) > 5 else None)):
        if theirs and rows[theirs]["added"] > 0:
            print(f"   {ours} added / {theirs} added: "
                  f"{rows[ours]['added'] / rows[theirs]['added']:.2f}")
    B.results["sections"]["usdt"] = rows


def _loop(binary: str, n: int) -> float:
    return _bare(binary, n)


def symbols_section(quick: bool) -> None:
    from pytracers.user import symbols as S
    from pytracers.user.targets import resolve_binary
    B.heading("symbol resolution: libc's table loaded once, then look-ups")
    libc = resolve_binary("libc")
    S.clear_cache()
    t0 = time.perf_counter()
    table = S.symbol_table(libc)
    load_ms = (time.perf_counter() - t0) * 1e3
    names = sorted({s.name for s in table})
    plain = [n for n in names if len(table.get(n) or ()) == 1 and not table.get(n)[0].ifunc]
    reps = 20 if quick else 100
    get = table.get
    t0 = time.perf_counter()
    for _ in range(reps):
        for nm in names:
            get(nm)
    get_rate = reps * len(names) / (time.perf_counter() - t0)
    lookup = table.lookup
    t0 = time.perf_counter()
    for _ in range(reps):
        for nm in plain:
            lookup(nm)
    lookup_rate = reps * len(plain) / (time.perf_counter() - t0)
    print(f"   {libc}: {len(table)} functions ({'with' if table.has_symtab else 'no'} .symtab"
          f"{', debug file' if table.debug_file else ''}), loaded in {load_ms:.1f} ms")
    print(f"   SymbolTable.get(name)     {B.fmt_rate(get_rate)}  ({len(names)} names x {reps})")
    print(f"   SymbolTable.lookup(name)  {B.fmt_rate(lookup_rate)}  ({len(plain)} names x {reps})")
    B.target("symbol_lookups", get_rate, get_rate >= 1e6, B.fmt_rate(get_rate).strip())
    B.results["sections"]["symbols"] = {"load_ms": load_ms, "get_per_s": get_rate,
                                        "lookup_per_s": lookup_rate, "functions": len(table)}
