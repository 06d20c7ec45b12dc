#!/usr/bin/env python3
"""Memory of failed loads: RSS over N failed loads of a 16-program object
(bench/failload.bpf.o: fifteen programs the verifier accepts, one it
rejects), with the cycle collector left alone and never called -- the issue's
target: RSS after 1,000 failed loads within 20 MB of the start.

    bench/failed_loads.py [N]        (default 1000; needs root for BPF)

Prints the RSS at the start (after one warm-up load), the highest RSS seen
(sampled every 10 loads), and at the end, in MB.
"""
from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import pytracers  # noqa: E402
from pytracers.errors import VerifierError  # noqa: E402

OBJECT = os.path.join(HERE, "failload.bpf.o")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def fail_once() -> None:
    try:
        pytracers.open(OBJECT).load()
    except VerifierError as e:
        assert e.program == "rejected", e
    else:
        raise SystemExit("the benchmark object loaded: the verifier should reject 'rejected'")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    fail_once()
    start = peak = rss_mb()
    t0 = time.perf_counter()
    for i in range(n):
        fail_once()
        if i % 10 == 9:
            peak = max(peak, rss_mb())
    took = time.perf_counter() - t0
    end = rss_mb()
    peak = max(peak, end)
    print(f"{n} failed loads of a 16-program object in {took:.1f} s "
          f"({took / n * 1000:.2f} ms each), no gc.collect():")
    print(f"RSS start {start:.1f} MB, peak {peak:.1f} MB (+{peak - start:.1f}), "
          f"end {end:.1f} MB (+{end - start:.1f}); target: within 20 MB of the start: "
          + ("met" if peak - start <= 20 else "NOT met"))


if __name__ == "__main__":
    main()
