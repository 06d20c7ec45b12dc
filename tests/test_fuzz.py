"""Mutated objects fed to pytracers.open() in child processes (scripts/fuzz_open.py).

Every input must open or be rejected with a PytracersError: no child may die
of a signal (libelf/libbpf crashing on a file the checks let through), raise
another exception, or hang.  The CI run is short; RELIABILITY.md documents
the long run and its command.  PYTRACERS_FUZZ_COUNT changes the count.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(REPO, "scripts", "fuzz_open.py")
VM = bool(os.environ.get("PYTRACERS_VM_KERNEL"))
COUNT = int(os.environ.get("PYTRACERS_FUZZ_COUNT", "30" if VM else "300"))


def _run(*extra: str, count: int = COUNT, timeout: float = 600) -> str:
    jobs = [] if "--jobs" in extra else ["--jobs", "2"]
    cmd = [sys.executable, DRIVER, "--count", str(count), *jobs, *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    print(out)
    m = re.search(r"fuzz: (\d+) inputs, (\d+) crashes, (\d+) failures, (\d+) hangs", out)
    assert m, f"no summary from the fuzz driver:\n{out}"
    total, crashes, failures, hangs = map(int, m.groups())
    assert total == count, out
    assert (crashes, failures, hangs) == (0, 0, 0), out
    assert p.returncode == 0, out
    return out


@pytest.mark.allow_leaks  # children only; the driver owns nothing in this process
def test_fuzz_open_short_run():
    """Host: 300 inputs opened, then 60 opened and loaded.  Kernel matrix: one
    run of inputs opened and loaded (opening is the same code on every
    kernel; loading is where kernels differ), in one worker, as every Python
    start costs seconds under qemu."""
    if VM:
        out = _run("--seed", "12", "--load", "--jobs", "1")
        assert re.search(r"\d+ (loaded|load-rejected)", out), out
        return
    out = _run("--seed", str(int(os.environ.get("PYTRACERS_FUZZ_SEED", "11"))))
    # The run must exercise both outcomes, or the mutations are not reaching libbpf.
    assert re.search(r"\d+ opened", out), out
    assert re.search(r"\d+ rejected InvalidObjectError", out), out
    # Inputs that open are loaded too: CO-RE and relocation code runs at load.
    out = _run("--seed", "12", "--load", count=max(20, COUNT // 5))
    assert re.search(r"\d+ (loaded|load-rejected)", out), out
