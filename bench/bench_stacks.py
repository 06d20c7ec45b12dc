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
    addrs = rng.choice(k.table.starts, n) + np.uint64(7)
    kr = _rate(lambda: k.names_of(addrs), n)
    print(f"   kernel: {len(k)} symbols loaded in {kload * 1e3:.0f} ms; "
          f"{kr / 1e6:.2f} M addresses/s ({n} random text addresses, names_of)")
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
                                        "kernel_load_s": kload, "user_load_s": uload}
    target("symbolize_kernel", kr, kr >= 1e6, f"{kr / 1e6:.2f} M/s")
    target("symbolize_user", ur, ur >= 1e6, f"{ur / 1e6:.2f} M/s")
