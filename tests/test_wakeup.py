"""The wakeup policy: no wakeup per event, one when the pending data crosses
``cfg_wakeup_bytes``, and nothing stranded when traffic stops.

With ``cfg_wakeup_bytes`` set (pytracers.h), a producer submits with
BPF_RB_NO_WAKEUP while less than the threshold is pending, forces one wakeup
when a record finds the threshold reached (then disarms until the consumer
has drained), and the reader polls at least every ``latency`` seconds, so a
trickle that never reaches the threshold is still delivered within that
bound.  Whether the kernel woke the reader is read off the ring's epoll fd
(``RingBuffer.fileno()``): it only becomes readable through a wakeup.
"""
from __future__ import annotations

import os
import select
import struct
import threading
import time

import pytest

import pytracers

BENCH = pytracers.object_path("bench")
REC = 72                                   # a 64-byte record and its 8-byte header
VM = bool(os.environ.get("PYTRACERS_VM_KERNEL"))
SLACK = 5.0 if VM else 0.5                 # scheduling slack on top of the latency bound


def woken(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def load(wakeup_bytes: int, ring: int = 1 << 16):
    o = pytracers.open(BENCH)
    o.only("fill_64")
    o.maps["events"].max_entries = ring
    o.config["cfg_wakeup_bytes"] = wakeup_bytes
    return o.load()


def armed(obj) -> int:
    off = obj.info.variables["pt_wakeup_armed"].offset
    return struct.unpack_from("<I", obj.maps["bench.data"].lookup(0), off)[0]


def test_one_wakeup_when_pending_data_crosses_the_threshold():
    threshold = 100 * REC
    with load(threshold) as obj:
        fill = obj.programs["fill_64"]
        rb = obj.ring_buffer(event="bench_rec64")
        fd = rb.fileno()
        for _round in range(2):                      # and again after the reader drained
            fill.test_run([10, 0])                   # 720 bytes: below the threshold
            assert not woken(fd, 0.2), "woken below the threshold"
            assert armed(obj) == 1
            fill.test_run([89, 0])                   # 99 records pending
            assert not woken(fd, 0.1)
            fill.test_run([1, 0])                    # the 100th reaches the threshold
            assert woken(fd, 2.0), "no wakeup at the threshold"
            assert armed(obj) == 0
            fill.test_run([50, 0])                   # the reader lags: no more wakeups owed
            assert armed(obj) == 0
            assert len(rb.read_batch()) == 150
            assert not woken(fd, 0.05)               # drained: the readiness is gone


def test_no_wakeup_without_threshold_is_the_kernel_default():
    """cfg_wakeup_bytes = 0: the kernel wakes a reader that has caught up."""
    with load(0) as obj:
        rb = obj.ring_buffer()
        obj.programs["fill_64"].test_run([1, 0])
        assert woken(rb.fileno(), 2.0)
        assert len(rb.read()) == 1


def test_trickle_below_threshold_is_delivered_within_the_latency_bound():
    """A reader blocked in iter_batches() while 5 records arrive without a
    wakeup, then traffic stops: it has all 5 within `latency` (+ slack)."""
    latency = 0.2
    with load(1 << 20, ring=1 << 22) as obj:          # a threshold never reached
        fill = obj.programs["fill_64"]
        rb = obj.ring_buffer(event="bench_rec64", latency=latency)
        got: list = []
        arrived: list = []

        def reader() -> None:
            for arr in rb.iter_batches(timeout=10 + SLACK):
                got.extend(arr["seq"].tolist())
                arrived.append(time.monotonic())
                if len(got) >= 5:
                    return

        t = threading.Thread(target=reader)
        t.start()
        time.sleep(0.3)                               # the reader is waiting
        t0 = time.monotonic()
        fill.test_run([5, 0])                         # ... and then nothing more
        t.join(10 + 2 * SLACK)
        assert not t.is_alive()
        assert got == [0, 1, 2, 3, 4]
        delay = arrived[-1] - t0
        assert delay <= latency + SLACK, f"stranded for {delay:.3f} s"


@pytest.mark.kind("tp")
def test_tracer_wakeup_bytes_reaches_the_bpf_side_and_nothing_is_stranded():
    from pytracers.tracers import SyscallTracer
    latency = 0.2
    me = os.getpid()
    pgid = os.getpgid(0)
    # wakeup_bytes=0: the kernel's default wakes the (caught-up) reader
    with SyscallTracer("getpgid", kind="tp", pid=me, wakeup_bytes=0) as t:
        os.getpgid(0)
        assert woken(t.fileno(), 2.0)
        assert [ev.pid for ev in t.read()] == [me]
    # a threshold: no wakeup for a few events, yet a blocked reader gets them
    with SyscallTracer("getpgid", kind="tp", pid=me, wakeup_bytes=1 << 20,
                       latency=latency) as t:
        for _ in range(3):
            os.getpgid(0)
        assert not woken(t.fileno(), 0.3), "woken below the threshold"
        assert [(ev.pid, ev.ret) for ev in t.read()] == [(me, pgid)] * 3
        seen: list = []
        done = threading.Event()

        def reader() -> None:
            for ev in t.events(timeout=10 + SLACK):
                seen.append((time.monotonic(), ev))
                if len(seen) == 3:
                    break
            done.set()

        th = threading.Thread(target=reader)
        th.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        for _ in range(3):
            os.getpgid(0)
        th.join(10 + 2 * SLACK)
        assert done.is_set() and len(seen) == 3
        assert all(ev.pid == me and ev.name == "getpgid" for _, ev in seen)
        assert seen[-1][0] - t0 <= latency + SLACK
        assert t.lost == 0
