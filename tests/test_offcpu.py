"""Off-CPU time: a workload that sleeps in a known function shows it, with the
kernel's sleep path, and the blocked time adds up."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

import pytracers

from conftest import (VM_KERNEL, again_if_stacks_lost, assert_gone_process_symbolised,
                      profile_a_process_gone_before_the_end)

WORKLOAD = r"""
#include <time.h>
#include <sys/syscall.h>
__attribute__((noinline)) void sleepy_function(void) {
    struct timespec ts = {0, 10 * 1000 * 1000};      /* 10 ms */
    /* the system call instruction itself: no libc frame below this one */
#if defined(__x86_64__)
    long ret;
    __asm__ volatile ("syscall" : "=a"(ret) : "a"(SYS_nanosleep), "D"(&ts), "S"(0)
                      : "rcx", "r11", "memory");
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = SYS_nanosleep;
    register long x0 __asm__("x0") = (long)&ts;
    register long x1 __asm__("x1") = 0;
    __asm__ volatile ("svc #0" : "+r"(x0) : "r"(x8), "r"(x1) : "memory");
#else
#error "add this machine's system call instruction"
#endif
}
int main(void) { for (;;) sleepy_function(); }
"""
SECONDS = 3.0 if VM_KERNEL else 1.0


@pytest.fixture(scope="module")
def sleeper(tmp_path_factory):
    d = tmp_path_factory.mktemp("off")
    (d / "sleeper.c").write_text(WORKLOAD)
    exe = d / "sleeper"
    # (leaf frames too: arm64's gcc leaves them out by default, and the
    # unwinder would then skip sleepy_function's caller)
    subprocess.run(["gcc", "-O0", "-fno-omit-frame-pointer", "-mno-omit-leaf-frame-pointer",
                    "-o", str(exe),
                    str(d / "sleeper.c")], check=True)
    return str(exe)


def test_blocked_time_in_the_sleeping_function(sleeper, need):
    p = subprocess.Popen([sleeper])
    try:
        time.sleep(0.1)
        with need("tp_btf"):
            prof = pytracers.offcpu(duration=SECONDS, pid=p.pid)
    finally:
        p.kill()
        p.wait()
    assert prof.unit == "microseconds" and prof.samples
    assert {s.pid for s in prof.samples} == {p.pid}
    mine = [s for s in prof.samples if s.ustack and s.ustack[0].symbol == "sleepy_function"]
    us = sum(s.count for s in mine)
    # nearly all of the time is spent asleep (10 ms sleeps, microseconds awake)
    assert 0.5 * SECONDS * 1e6 <= us <= 1.2 * SECONDS * 1e6, (us, prof.stats)
    ks = [f.symbol for f in mine[0].kstack]
    assert "do_nanosleep" in ks, ks
    assert [f.symbol for f in mine[0].ustack[:2]] == ["sleepy_function", "main"]


def test_cli_offcpu_folded(sleeper):
    p = subprocess.Popen([sleeper])
    try:
        r = subprocess.run([sys.executable, "-m", "pytracers", "offcpu", "--pid", str(p.pid),
                            "-d", str(SECONDS / 2), "-f", "speedscope"],
                           capture_output=True, text=True, timeout=120)
    finally:
        p.kill()
        p.wait()
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    prof = doc["profiles"][0]
    assert prof["unit"] == "microseconds" and sum(prof["weights"]) > 0
    names = {f["name"] for f in doc["shared"]["frames"]}
    assert "sleepy_function" in names and "do_nanosleep_[k]" in names


@pytest.mark.parametrize("watch", [True, False])
def test_a_process_gone_before_the_end_symbolises_when_watched(sleeper, need, watch):
    """A process that blocks and exits before the off-CPU profile ends: its
    mappings were read when its first block added a count (as the sampling
    profiler does), so its frames are named; unwatched they are [unknown],
    'process gone'."""
    def run():
        with need("tp_btf"):
            prof = pytracers.OffCpuProfiler(comm="sleeper", kernel=False, watch_processes=watch)
        return profile_a_process_gone_before_the_end(prof, [sleeper], SECONDS / 2)

    again_if_stacks_lost(
        run, lambda out: assert_gone_process_symbolised(out[0], out[1], "sleepy_function", watch))
