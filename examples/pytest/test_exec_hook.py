"""Example: unit-testing a BPF object with the pytracers pytest plugin.

The plugin is active wherever pytracers is installed; run this file with
``pytest examples/pytest/test_exec_hook.py -rs`` (as root, or with CAP_BPF and
CAP_PERFMON).  ``tests/test_pytest_plugin.py`` runs it as part of the suite.

It uses the exec tracer shipped with pytracers ("exec": tracepoints
syscalls:sys_enter_execve/sys_exit_execve, records of ``struct exec_event``);
replace ``"exec"`` with the path of your own ``.bpf.o``.
"""
import os
import struct
import subprocess

import pytest


def pid_of(rec: bytes) -> int:
    """The header every pytracers event starts with: u64 ts_ns, u32 pid, ..."""
    return struct.unpack_from("<QI", rec)[1]


@pytest.mark.bpf_requires("tp")
def test_exec_is_traced(bpf_object, bpf_events):
    obj = bpf_object("exec")              # opened, loaded, every program attached
    events = bpf_events(obj)              # collects the `events` ring buffer
    child = subprocess.Popen(["/bin/true", "from-the-example"])
    child.wait()
    rec = events.wait_for(lambda r: pid_of(r) == child.pid, timeout=10.0)
    filename = rec[56:56 + 256].split(b"\0")[0]
    ppid = struct.unpack_from("<I", rec, 40)[0]
    assert filename == b"/bin/true"
    assert ppid == os.getpid()


@pytest.mark.bpf_requires("tp")
def test_configured_before_load(bpf_object, bpf_events):
    """cfg_pid is a `const volatile` set before load: only that process is traced."""
    child = subprocess.Popen(["/bin/sh", "-c", "read go; exec /bin/true only-me"],
                             stdin=subprocess.PIPE)
    try:
        obj = bpf_object("exec", config={"cfg_pid": child.pid})
        events = bpf_events(obj)
        subprocess.run(["/bin/true", "not-me"], check=True)    # filtered out
        child.communicate(b"go\n")                             # now the child execs
        rec = events.wait_for(lambda r: pid_of(r) == child.pid)
        assert rec[320:].split(b"\0")[1] == b"only-me"   # argv packed from byte 320
        assert {pid_of(r) for r in events.records} == {child.pid}
    finally:
        child.kill()
        child.wait()


@pytest.mark.bpf_requires("raw_tp", "BPF_PROG_TEST_RUN")
def test_producer_under_test_run(bpf_object, bpf_events, bpf_test_run):
    """No trigger needed: BPF_PROG_TEST_RUN runs a raw_tp program directly.
    bench's fill_64 takes ctx = [n, discard_every] and returns how many
    records it reserved; each record starts with a running u64 seq."""
    obj = bpf_object("bench", only=["fill_64"], attach=False)
    events = bpf_events(obj)
    bpf_test_run(obj.programs["fill_64"], [5, 0], retval=5)
    recs = events.wait_for(count=5)
    assert [struct.unpack_from("<Q", r)[0] for r in recs] == [0, 1, 2, 3, 4]


@pytest.mark.bpf_requires("kprobe_multi", min_kernel="99.0")
def test_needs_a_future_kernel():
    raise AssertionError("the marker skips this before it runs on any kernel before 99.0")
