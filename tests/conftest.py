"""Shared test machinery: leak checks and the skip rule for probe kinds.

Skip rule (cilium/ebpf's SkipIfNotSupported): a test of a probe kind may skip
only when the kernel it runs on is known to lack that kind; on a kernel that
should have it, NotSupportedError fails the test.  Inside the kernel matrix
(scripts/vmtest sets PYTRACERS_VM_KERNEL) the expectations are the table
below; on any other machine a kind is expected unless the kernel gives a
known reason for lacking it -- the rule the pytest plugin applies to
``@bpf_requires`` (:func:`pytracers.pytest_plugin.known_lack`: a config
option off, e.g. no kprobe PMU or no CONFIG_FPROBE; trampolines refused by
lockdown or a security module; no trampoline for the architecture).
"""
from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import time
from typing import Iterator, List, Optional

import pytest

from pytracers import pytest_plugin
from pytracers.errors import NotSupportedError
from pytracers.kernel import introspect
from pytracers.kernel.host import kernel_release

VM_KERNEL = os.environ.get("PYTRACERS_VM_KERNEL")  # "5.10", ..., "latest", "arm64-6.1"... or None

ALL_KINDS = ("tp", "raw_tp", "tp_btf", "kprobe", "kretprobe", "fentry", "fexit", "fmod_ret",
             "kprobe_multi", "uprobe", "uretprobe", "usdt", "perf_event")
# usdt: every kernel of the matrix (libbpf's USDT needs 5.5; before 5.15, without
# BPF cookies, it cannot attach system-wide to a shared library or PIE binary, and
# the tests attach with pid= or to the non-PIE /usr/bin/python3.11 there)
# What each kernel of the matrix must support (see ../shared/KERNELS.md).
VM_EXPECTED = {
    "5.10": set(ALL_KINDS) - {"kprobe_multi"},           # kprobe_multi is 5.18+
    "6.1": set(ALL_KINDS) - {"kprobe_multi"},            # Debian 6.1: CONFIG_FPROBE off
    "6.12": set(ALL_KINDS),
    "latest": set(ALL_KINDS),
    # arm64 (scripts/vmtest --arch arm64): 6.1 has no BPF trampolines (attach
    # fails with ENOTSUPP: DYNAMIC_FTRACE_WITH_DIRECT_CALLS came to arm64 in
    # 6.4) and Debian's has no CONFIG_FPROBE; 6.12 and later have both.
    "arm64-6.1": set(ALL_KINDS) - {"kprobe_multi", "fentry", "fexit", "fmod_ret"},
    "arm64-6.12": set(ALL_KINDS),
    "arm64-latest": set(ALL_KINDS),
}


def wait_for(what: str, done, timeout: float = 120.0) -> None:
    """Poll ``done()`` until it holds: a child interpreter's start takes
    seconds under qemu's emulation, and a guest's vCPU may get no host time
    for a while, so a test waits for what the child did, not for a fixed
    time."""
    end = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < end, f"{what}: not after {timeout:.0f} s"
        time.sleep(0.02)


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) process ``pid`` has had, from /proc."""
    from pytracers.user.procfs import cpu_seconds as cpu
    seconds = cpu(pid)
    assert seconds is not None, f"process {pid} is gone"
    return seconds


def profile_a_process_gone_before_the_end(prof, argv: List[str], seconds: float,
                                          on_cpu: bool = False):
    """Run ``argv`` under the profiler ``prof`` (on-CPU or off-CPU) for
    ``seconds`` -- of CPU time when ``on_cpu`` (a sampling profiler sees a
    process only while it runs: wall time in a busy guest may give it
    little) -- kill it, then stop the profile: (its result, the pid)."""
    with prof:
        p = subprocess.Popen(argv)
        try:
            if on_cpu:
                wait_for(f"{seconds} s of CPU time", lambda: cpu_seconds(p.pid) >= seconds)
            else:
                time.sleep(seconds)
        finally:
            p.kill()
            p.wait()
        return prof.result(), p.pid


def again_if_stacks_lost(run, check, attempts: int = 3):
    """``check(run())``, run again (``attempts`` times at most) when the check
    fails and the profile counted user stacks the kernel refused
    (``stats['ustack_lost']``: bpf_get_stackid's stack map, e.g. a bucket
    holding another stack of the same hash).  Under qemu's TCG a sample lands
    only between translated blocks, so every sample of a tight loop has the
    same stack: one refused stack loses all of them, and what the test checks
    (that the frames of the samples kept are named) has nothing to check.  A
    failure with no stack lost fails at once.  ``run()`` returns the profile,
    or a tuple that starts with it; the last run's value is returned."""
    for attempt in range(attempts):
        out = run()
        try:
            check(out)
            return out
        except AssertionError:
            result = out[0] if isinstance(out, tuple) else out
            if attempt == attempts - 1 or not result.stats.get("ustack_lost"):
                raise


def assert_gone_process_symbolised(result, pid: int, symbol: str, watched: bool) -> None:
    """A profile (on-CPU or off-CPU) of a process that exited before it
    ended: watched, ``symbol`` tops its user stacks and no frame is lost to
    'process gone'; unwatched, every top frame is [unknown] for that reason."""
    mine = [s for s in result.samples if s.pid == pid and s.ustack]
    assert mine and sum(s.count for s in mine) > 0, result.stats
    tops = {s.ustack[0].symbol for s in mine}
    gone = result.stats["unknown_frames"].get("process gone", 0)
    if watched:
        assert symbol in tops, (tops, result.stats["unknown_frames"])
        assert gone == 0
    else:
        assert tops == {"[unknown]"}, tops
        assert gone > 0


def kernel_label() -> str:
    return f"VM kernel {VM_KERNEL}" if VM_KERNEL else f"host kernel {kernel_release()}"


def known_lack(kind: str, exc: NotSupportedError) -> Optional[str]:
    """On a machine outside the matrix: the reason ``exc`` gives for lacking
    ``kind`` if it is a known one, else None.  The rule is the plugin's, the
    same for every kind (the reasons name their cause: CONFIG_KPROBES,
    CONFIG_FPROBE, lockdown...)."""
    return pytest_plugin.known_lack(exc)


def expected(kind: str) -> bool:
    if VM_KERNEL:
        return kind in VM_EXPECTED.get(VM_KERNEL, set(ALL_KINDS))
    return True


@contextlib.contextmanager
def supported(kind: str) -> Iterator[None]:
    """Run a block that needs probe ``kind``: skip if the kernel lacks it for
    a known reason, fail if the kernel should have it."""
    try:
        yield
    except NotSupportedError as e:
        if VM_KERNEL:
            if expected(kind):
                pytest.fail(f"{kind} should work on {kernel_label()} but: {e}")
            pytest.skip(f"{kernel_label()} lacks {kind}: {e.reason}")
        why = known_lack(kind, e)
        if why is None:
            pytest.fail(f"{kind} not supported for an unexpected reason on {kernel_label()}: {e}")
        pytest.skip(f"{kernel_label()} lacks {kind}: {why}")


@pytest.fixture
def need():
    """``with need("kprobe"): ...`` -- see supported()."""
    return supported


def _fds() -> set:
    return set(os.listdir("/proc/self/fd"))


def _describe_fds(fds: set) -> str:
    out = []
    for fd in sorted(fds, key=int):
        try:
            out.append(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            out.append(fd)
    return ", ".join(out)


def _pins() -> set:
    out = set()
    for root, dirs, files in os.walk("/sys/fs/bpf"):
        out.update(os.path.join(root, n) for n in dirs + files)
    return out


# Set by a test that reruns itself in a private mount namespace without bpffs.
NO_BPFFS_ENV = "PYTRACERS_TEST_NO_BPFFS"


@pytest.fixture(scope="session", autouse=True)
def bpffs() -> Iterator[None]:
    """Pins live in bpffs at /sys/fs/bpf.  Where it is not mounted (this is
    the machine's state, not the kernel's: the kernel has bpffs), mount it
    for the run, as bpftool does before it pins, so the pin tests run."""
    if os.environ.get(NO_BPFFS_ENV) or os.path.ismount("/sys/fs/bpf"):
        yield
        return
    res = subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.fail(f"cannot mount bpffs at /sys/fs/bpf: {res.stderr.strip()}")
    yield


@pytest.fixture(autouse=True)
def no_leaks(request):
    """Fail a test that leaves an fd open, a pin in bpffs, or BPF objects
    in the kernel.  Every unpinned program, map or link we create is held by
    an fd of this process, so the fd check covers them without being fooled
    by other processes' BPF objects; the kernel walk names what leaked."""
    if request.node.get_closest_marker("allow_leaks"):
        yield
        return
    gc.collect()
    # What is alive now survived a full collection: freeze it, so the next
    # test's collection (and the interpreter's own) examines only what later
    # tests create.  A full pass over the suite's long-lived objects (parsed
    # BTF, symbol tables, collected modules) took ~120 ms per test: ~55 s of
    # a host run, more under qemu.  What a test creates stays collectable.
    gc.freeze()
    fds, pins, kobjs = _fds(), _pins(), introspect.snapshot()
    yield
    leaked_fds = _fds() - fds
    leaked_pins = _pins() - pins
    if leaked_pins:
        pytest.fail(f"test left pins in bpffs: {sorted(leaked_pins)}")
    if leaked_fds:
        now = introspect.snapshot()
        kernel = {k: sorted(now[k] - kobjs[k]) for k in now if now[k] - kobjs[k]}
        gc.collect()
        still = _fds() - fds
        if still:
            pytest.fail(f"test leaked fds: {_describe_fds(still)}; new kernel objects: {kernel}")
        pytest.fail(f"test left fds ({_describe_fds(leaked_fds)}) that only the garbage "
                    f"collector released (kernel objects {kernel}): close() what you open")


def pytest_configure(config):
    config.addinivalue_line("markers", "allow_leaks: the test manages its own fds")
    config.addinivalue_line(
        "markers", "kernel_independent: the outcome cannot depend on the running kernel (pure "
        "parsing, docs, typing); the kernel matrix deselects these and the host runs them")
