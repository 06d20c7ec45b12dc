"""Why a ring-buffer reservation fails in a ring far from full.

    bench/run --only ringloss                  the default: 5 x 1,000,000 calls per condition
    .venv/bin/python bench/ringloss.py --calls 1000000 --trials 5 --producers 2

bench/ringloss.bpf.o's program (on syscalls:sys_enter_getpgid of the loop
processes only) reserves a 120-byte record per call -- what the syscall
tracer emits -- and, when the kernel refuses, records how full the ring was
and how long the refusal took (see the .bpf.c).  Conditions, each over
``--trials`` loops of ``--calls`` getpgid(2) (bench/sysloop.c), the ring large
enough for a whole loop (as in bench/run's probe-cost section):

* no reader (the ring drained between loops);
* a reader thread reading every event as it comes (``RingBuffer.events()``),
  with the kernel's wakeup policy (wakeup_bytes=0) and with the tracers'
  default (a quarter of the ring);

``--producers 2`` runs two loops at once (one per CPU on this 2-CPU
machine), so the two producers take the ring's lock in turn.

Prints, per condition: calls, records read, lost (the kernel refused), and
of those, "full" (no room for the record) and "not full" (room, refused for
another reason), with each failure's positions and duration.
"""
from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
OBJ = os.path.join(HERE, "ringloss.bpf.o")
STATS = ("attempts", "full", "not_full", "slow_ok", "max_ok_ns")


def _sysloop(tmp: str, built: Optional[str] = None) -> List[str]:
    """bench/sysloop.c, copied under a name no other process has (the
    program counts only processes of that command name)."""
    if built is None:
        sys.path.insert(0, HERE)
        import bench  # noqa: E402  (bench/bench.py: builds bench/sysloop.c)
        built = bench.build("sysloop", optional=True)
    if not built:
        sys.exit("ringloss: needs gcc to build bench/sysloop.c")
    mine = os.path.join(tmp, f"rloop{os.getpid()}")
    shutil.copy(built, mine)
    return [mine]


def _struct_positions(reader: Any) -> None:
    """Make ``reader`` read and store the ring's positions with
    struct.unpack_from / pack_into, as pytracers did before they became
    single 8-byte accesses (word64): the condition that reproduces the loss."""
    u64 = struct.Struct("<Q")
    cons, data = reader._cons, reader._data
    reader.consumer_pos = lambda: u64.unpack_from(cons, 0)[0]
    reader.producer_pos = lambda: u64.unpack_from(data, 0)[0]
    reader._set_consumer_pos = lambda pos: u64.pack_into(cons, 0, pos)


def _failure(raw: bytes) -> Any:
    from types import SimpleNamespace
    names = ("ts_ns", "took_ns", "cons_pos", "prod_pos", "avail", "size")
    vals = struct.unpack_from("<6Q2I", raw)
    return SimpleNamespace(**dict(zip(names, vals)), cpu=vals[6], pid=vals[7])


def run_condition(name: str, reader: bool, wakeup: int, old: bool, calls: int, trials: int,
                  producers: int, loop: List[str]) -> Dict[str, Any]:
    import pytracers
    ring_size = 1 << max(22, (calls * producers * 128 - 1).bit_length())
    o = pytracers.open(OBJ)
    o.maps["events"].max_entries = ring_size
    o.config["cfg_comm"] = os.path.basename(loop[0]).encode()[:15]   # the loop's comm
    o.config["cfg_wakeup_bytes"] = wakeup
    with o.load() as obj:
        obj.programs["rl_getpgid"].attach_tracepoint("syscalls", "sys_enter_getpgid")
        ring = obj.ring_buffer("events", event="rl_record")
        if old:
            _struct_positions(ring._reader)
        seen = [0]
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                for _ev in ring.events(timeout=0.2):
                    seen[0] += 1
        th = threading.Thread(target=read, daemon=True) if reader else None
        if th is not None:
            th.start()
        t0 = time.monotonic()
        for _ in range(trials):
            procs = [subprocess.Popen([*loop, "count", str(calls)], stdout=subprocess.DEVNULL)
                     for _ in range(producers)]
            for p in procs:
                p.wait()
            if th is None:
                seen[0] += ring.consume(lambda ev: None)
            else:
                deadline = time.monotonic() + 120
                while ring.pending_bytes() and time.monotonic() < deadline:
                    time.sleep(0.01)
        wall = time.monotonic() - t0
        if th is not None:
            stop.set()
            th.join()
        seen[0] += ring.consume(lambda ev: None)
        m = obj.maps["rl_stats"]
        per_cpu = [[int.from_bytes(v, "little") for v in m.lookup(i)] for i in range(len(STATS))]
        st = {k: (max(v) if k == "max_ok_ns" else sum(v)) for k, v in zip(STATS, per_cpu)}
        nfail = int.from_bytes(obj.maps["rl_nfail"].lookup(0), "little")
        failures = [_failure(obj.maps["rl_failures"].lookup(i)) for i in range(min(nfail, 64))]
        lost = obj.maps["lost"].sum_percpu_u64()
    return {"condition": name, "calls": calls * trials * producers, "read": seen[0],
            "lost": lost, "ring_size": ring_size, "wall_s": round(wall, 1), **st,
            "failures": failures}


CONDITIONS = ("no reader", "reader, wakeup_bytes=0", "reader, wakeup a quarter ring",
              "reader, wakeup_bytes=0, struct", "reader, quarter ring, struct")


def measure(calls: int, trials: int, only: Optional[str] = None, rounds: int = 1,
            producers: int = 1, show_failures: int = 8,
            sysloop: Optional[str] = None) -> Dict[str, Dict[str, int]]:
    """Run the conditions (``only``: comma-separated indices into CONDITIONS,
    in that order, repeated ``rounds`` times: A B A B ...); print a line per
    run and return the totals per condition name.  ``sysloop``: the built
    bench/sysloop.c (default: build it)."""
    tmp = tempfile.mkdtemp(prefix="ringloss-")
    try:
        loop = _sysloop(tmp, sysloop)
        ring_size = 1 << max(22, (calls * producers * 128 - 1).bit_length())
        conds = [(CONDITIONS[0], False, 0, False), (CONDITIONS[1], True, 0, False),
                 (CONDITIONS[2], True, ring_size // 4, False), (CONDITIONS[3], True, 0, True),
                 (CONDITIONS[4], True, ring_size // 4, True)]
        if only:
            conds = [conds[int(i)] for i in only.split(",")]
        print(f"   {calls} calls x {trials} trials x {producers} producer(s) per run, ring "
              f"{ring_size >> 20} MiB, kernel {os.uname().release}, load "
              f"{os.getloadavg()[0]:.2f}; 'struct': the ring positions read and stored with "
              f"struct.unpack_from/pack_into (before the fix)", flush=True)
        totals: Dict[str, Dict[str, int]] = {}
        for _ in range(rounds):
            for name, reader, wakeup, old in conds:
                r = run_condition(name, reader, wakeup, old, calls, trials, producers, loop)
                ok = r["read"] + r["lost"] == r["calls"] == r["attempts"]
                print(f"   {name:<32} calls {r['calls']}, read {r['read']}, lost {r['lost']} "
                      f"(full {r['full']}, not full {r['not_full']}); reservations over 1 ms "
                      f"{r['slow_ok']}, longest {r['max_ok_ns'] / 1e3:.0f} us; {r['wall_s']} s"
                      + ("" if ok else "  ACCOUNTING MISMATCH"), flush=True)
                for f in r["failures"][:show_failures]:
                    print(f"     failed after {f.took_ns / 1e3:.1f} us on CPU {f.cpu}: "
                          f"consumer {f.cons_pos}, producer {f.prod_pos}, pending {f.avail} of "
                          f"{f.size} bytes", flush=True)
                t = totals.setdefault(name, {"runs": 0, "calls": 0, "read": 0, "lost": 0,
                                             "full": 0, "not_full": 0, "mismatches": 0})
                t["runs"] += 1
                t["mismatches"] += 0 if ok else 1
                for k in ("calls", "read", "lost", "full", "not_full"):
                    t[k] += int(r[k])
        for name, t in totals.items():
            print(f"   total {name:<26} {t['calls']} calls in {t['runs']} runs: {t['lost']} lost "
                  f"({t['full']} full, {t['not_full']} with room in the ring)", flush=True)
        return totals
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=1_000_000)
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--producers", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1, help="repeat every condition")
    p.add_argument("--only", help="comma-separated condition numbers: " +
                   ", ".join(f"{i} {c}" for i, c in enumerate(CONDITIONS)))
    args = p.parse_args(argv)
    measure(args.calls, args.trials, args.only, args.rounds, args.producers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
