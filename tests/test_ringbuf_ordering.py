"""The ring-buffer reader orders its reads as the kernel's producer needs on
every architecture (pytracers.ringbuf, "Memory ordering").

* Where the memory model is weaker than x86-64's (arm64), the reader issues a
  full barrier after reading the producer position, between a run's headers
  and its data, and before storing the consumer position: a fixed number per
  run of records, on the per-event, batch and zero-copy paths; on x86-64 none.
* A stress test that would catch a missing barrier as far as a test can:
  producers on several CPUs write 256-byte records (every word equal to the
  record's seq) with BPF_PROG_TEST_RUN into a ring small enough to wrap
  hundreds of times, while the reader checks every record's contents on all
  three paths; a record read before its data was visible would show words
  of an older lap.  It matters in the arm64 guest (scripts/vmtest --arch
  arm64, 2 vCPUs); on x86-64 it checks the same contract under concurrency.
"""
from __future__ import annotations

import os
import struct
import threading
import time

import numpy as np
import pytest

import pytracers
from pytracers.ringbuf import HEADER_SIZE, RingReader
from pytracers.ringbuf.buffer import ring_fence

BENCH = pytracers.object_path("bench")
PAGE = os.sysconf("SC_PAGE_SIZE")
VM = bool(os.environ.get("PYTRACERS_VM_KERNEL"))


def test_fence_per_machine():
    """x86-64 reads with plain loads (no call added); arm64 gets libatomic's
    full fence, which runs."""
    assert ring_fence("x86_64") is None
    fence = ring_fence("aarch64")
    assert callable(fence)
    fence()                                   # atomic_thread_fence(seq_cst) through cffi
    assert (ring_fence() is None) == (os.uname().machine == "x86_64")


class Ring:
    """A synthetic ring (the kernel's layout) of ``n`` 64-byte records, and a
    fence that counts its calls and notes when the reader delivered data."""

    def __init__(self, n: int) -> None:
        size = 1 << max(12, (n * 72 - 1).bit_length())
        self.cons = bytearray(PAGE)
        self.data = bytearray(PAGE + 2 * size)
        pos = 0
        for seq in range(n):
            struct.pack_into("<II8Q", self.data, PAGE + pos, 64, 0, *([seq] * 8))
            pos += HEADER_SIZE + 64
        self.data[PAGE + size:] = self.data[PAGE:PAGE + size]
        struct.pack_into("<Q", self.data, 0, pos)
        self.end = pos
        self.fences = 0
        self.reader = RingReader(self.cons, self.data, size, dtype=np.dtype(
            [("seq", "<u8"), ("pad", "<u8", 7)]), fence=self.fence)

    def fence(self) -> None:
        self.fences += 1

    def consumer_pos(self) -> int:
        return struct.unpack_from("<Q", self.cons, 0)[0]


@pytest.mark.parametrize("path", ["consume", "read_batch", "consume_views"])
@pytest.mark.parametrize("n", [3, 200])
def test_fences_per_run_not_per_record(path, n):
    """A run of records costs the same few barriers whatever its length; data
    is delivered only after the producer position's and the headers'
    barriers, and the consumer position moves after one more."""
    ring = Ring(n)
    seen_at: list = []

    def on_data(x):
        seen_at.append(ring.fences)
        if path == "consume_views":             # the views are read before the position moves
            assert ring.consumer_pos() == 0

    if path == "consume":
        got = ring.reader.consume(lambda rec: on_data(rec))
        assert got == n
    elif path == "read_batch":
        rows = ring.reader.read_batch()
        on_data(rows)
        assert list(rows["seq"]) == list(range(n))
    else:
        assert ring.reader.consume_views(on_data) == n
    assert ring.consumer_pos() == ring.end
    assert min(seen_at) >= 2                # producer position, then the headers
    # per-record (short runs) or one run: bounded by the records' runs, not
    # their number (n = 200 is one run)
    assert ring.fences <= (4 * n if n < 8 else 6)


def _producer(fill, cpu: int, stop: threading.Event, out: list) -> None:
    try:
        os.sched_setaffinity(0, {cpu})        # this thread only
    except OSError:
        pass
    reserved = 0
    while not stop.is_set():
        reserved += fill.test_run([64, 0]).retval
    out.append(reserved)


def test_stress_producers_on_all_cpus_every_record_whole():
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("one CPU: the producer and the reader cannot run at once")
    seconds = 6.0 if VM else 1.5
    bad = []
    received = 0

    def check(seq, pad):
        nonlocal received
        received += len(seq)
        wrong = (pad != seq[:, None]).any(axis=1)
        if wrong.any():
            bad.append((seq[wrong][:3].tolist(), pad[wrong][:3].tolist()))

    o = pytracers.open(BENCH)
    o.only("fill_256")
    o.maps["events"].max_entries = 4 * PAGE         # 62 records: wraps all the time
    with o.load() as obj:
        fill = obj.programs["fill_256"]
        rb = obj.ring_buffer(event="bench_rec256")
        stop = threading.Event()
        counts: list = []
        threads = [threading.Thread(target=_producer, args=(fill, c, stop, counts))
                   for c in cpus[:4]]
        for t in threads:
            t.start()
        try:
            end = time.monotonic() + seconds
            i = 0
            while time.monotonic() < end:
                i += 1
                if i % 3 == 0:
                    evs = rb.read()
                    if evs:
                        check(np.array([e.seq for e in evs], np.uint64),
                              np.array([list(e.pad) for e in evs], np.uint64))
                elif i % 3 == 1:
                    rows = rb.read_batch()
                    check(rows["seq"], rows["pad"])
                else:
                    rb.consume_views(lambda rows: check(rows["seq"], rows["pad"]))
        finally:
            stop.set()
            for t in threads:
                t.join()
        rows = rb.read_batch()
        check(rows["seq"], rows["pad"])
        lost = obj.maps["lost"].sum_percpu_u64()
    assert not bad, f"records read before their data: {bad[:3]}"
    reserved = sum(counts)
    assert received == reserved           # each one read once (lost ones were never reserved)
    assert lost >= 0
    assert received > 1000                    # the reader kept up with a good share
