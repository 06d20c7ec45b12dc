"""The perf-buffer reader (pytracers.perfbuf) on a perf event array written
the way libbpf tools write it (tests/objects/perf_output.bpf.c).

Samples come from two kinds of producer: this process's own getppid() calls
traced by a tracepoint program (a struct on the stack, sent with
``bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, ...)``), and raw_tp
programs run with BPF_PROG_TEST_RUN that send numbered samples and count, in
the ``counts`` map, what they tried to send and what the kernel refused.  A
test run sends on the CPU it runs on, so tests that need one CPU's ring
(overflow, wrap-around, wakeups) pin this thread to one CPU first; the
positions in that ring are then known exactly: every 64-byte sample is an
80-byte record (8-byte header, u32 size, 68 bytes with the kernel's padding).

What is proved: exact counts and field values; lost == produced - delivered
(the kernel's PERF_RECORD_LOST records against the producer's own count of
refusals) after an overflow of a one-page ring; records that wrap around
the end of a ring, of fixed and of variable size, read intact per event and
in batches; numpy batches with the dtype from BTF; asyncio; two threads
sharing every sample exactly once; close() ending a blocked reader at once;
wakeups by event count and by watermark; no fd left behind and the map's
entries removed on close.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import select
import struct
import threading
import time
from typing import Any, Iterator, List

import numpy as np
import pytest

import pytracers
import pytracers.aio as aio
from pytracers.errors import (BadArgumentError, BusyError, CallbackError, ClosedError,
                              NotSupportedError)
from pytracers.perfbuf import PerfBuffer, PerfReader
from pytracers.ringbuf import RingBuffer

# The reader has no memory barriers for weaker orderings than x86-64's yet:
# elsewhere (arm64) it refuses to open, which test_refused_where_ordering_is_weaker
# checks, and the rest cannot run.  Those tests then exercise no probe kind,
# so they are not counted as raw_tp tests there (a raw_tp skip would read as
# the kernel lacking raw_tp).
READER_RUNS = os.uname().machine == "x86_64"
pytestmark = pytest.mark.kind("raw_tp") if READER_RUNS else []

HERE = os.path.dirname(os.path.abspath(__file__))
OBJ = os.path.join(HERE, "objects", "perf_output.bpf.o")
PAGE = os.sysconf("SC_PAGE_SIZE")
MAGIC = 0x5A5A5A5A5A5A5A5A
REC64 = 80                 # record of a 64-byte sample: 8 + 4 + 68 (padded)
VM = bool(os.environ.get("PYTRACERS_VM_KERNEL"))
LONG = 60.0 if VM else 10.0


@pytest.fixture(autouse=True)
def _reader_runs_here(request: Any) -> None:
    if not READER_RUNS and request.node.originalname != "test_refused_where_ordering_is_weaker":
        pytest.skip(f"the perf-buffer reader refuses {os.uname().machine}: no memory barriers "
                    "for its weaker ordering yet (pytracers' limit, not the kernel's)")


def test_refused_where_ordering_is_weaker(monkeypatch: Any) -> None:
    """Off x86-64 the reader refuses before opening anything, saying why (on
    x86-64 the machine's name is faked)."""
    with load() as obj:
        if READER_RUNS:
            real = os.uname()
            fake = type(real)((real.sysname, real.nodename, real.release, real.version,
                               "aarch64"))
            monkeypatch.setattr(os, "uname", lambda: fake)
        with pytest.raises(NotSupportedError, match="only x86-64 is supported, this is aarch64"):
            obj.perf_buffer("events")


def load(target_pid: int = 0) -> Any:
    o = pytracers.open(OBJ)
    o.config["target_pid"] = target_pid
    return o.load()


@contextlib.contextmanager
def one_cpu() -> Iterator[int]:
    """Run this thread on one CPU (test runs then send to that CPU's ring)."""
    before = os.sched_getaffinity(0)
    cpu = min(before)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)


def counts(obj: Any) -> tuple:
    """(samples the producers tried to send, samples the kernel refused)."""
    c = obj.maps["counts"]
    return c.sum_percpu_u64(0), c.sum_percpu_u64(1)


def produce(obj: Any, n: int, prog: str = "produce") -> int:
    """Run the producer until it has tried ``n`` samples; how many were sent."""
    p = obj.programs[prog]
    sent = 0
    while n > 0:
        k = min(n, 512)
        sent += p.test_run([k, 0]).retval
        n -= k
    return sent


def read_n(pb: PerfBuffer, n: int) -> List[Any]:
    out: List[Any] = []
    deadline = time.monotonic() + LONG
    while len(out) < n and time.monotonic() < deadline:
        pb.poll(0.2, out.append)
    return out


def check_sample64(rec: Any, seq: int) -> None:
    assert rec.seq == seq
    assert rec.pad == (seq ^ MAGIC,) * 7


def var_len(seq: int) -> int:
    return 8 + (seq * 37) % 249


def var_payload(seq: int) -> bytes:
    """What produce_var sends for ``seq``."""
    words = [seq] + [seq * 31 + i for i in range(1, 32)]
    return struct.pack("<32Q", *words)[:var_len(seq)]


def padded(n: int) -> int:
    """The raw size the kernel reports for an ``n``-byte sample: padded so
    that the u32 size and the data end 8-aligned (the padding bytes are
    whatever the ring held there: not read)."""
    return ((4 + n + 7) & ~7) - 4


def wraps(sizes: List[int], ring: int) -> int:
    """How many records of these sizes, written in order from position 0,
    cross the end of a ring of ``ring`` bytes."""
    pos, n = 0, 0
    for s in sizes:
        if pos % ring + s > ring:
            n += 1
        pos += s
    return n


# ---- what the tools do ----------------------------------------------------------------

def test_tracepoint_samples_arrive_exactly_once_with_their_fields():
    """getppid() 40 times -> exactly 40 samples, decoded by name from the
    object's BTF: our pid and tid, nth 1..40, our comm, rising timestamps."""
    n = 40
    with load(os.getpid()) as obj:
        pb = obj.output("events", event="event")
        assert isinstance(pb, PerfBuffer)
        obj.programs["on_getppid"].attach()
        for _ in range(n):
            os.getppid()
        got = read_n(pb, n)
        assert pb.read(0.3) == []                       # nothing more
        with open("/proc/self/comm") as f:
            comm = f.read().strip()
        assert sorted(e.nth for e in got) == list(range(1, n + 1))
        assert {(e.pid, e.tid, e.comm) for e in got} == {(os.getpid(), threading.get_native_id(),
                                                          comm)}
        by_nth = sorted(got, key=lambda e: e.nth)
        ts = [e.ts_ns for e in by_nth]
        assert ts == sorted(ts) and len(set(ts)) == n
        assert pb.delivered == n and pb.lost == 0


def test_test_run_samples_exact_count_and_values():
    """300 numbered samples: every seq once, every pad word intact, no loss."""
    with load() as obj, one_cpu():
        pb = obj.perf_buffer("events", event="sample64")
        assert produce(obj, 300) == 300
        got = read_n(pb, 300)
        assert [r.seq for r in got] == list(range(300))
        for r in got:
            check_sample64(r, r.seq)
        assert counts(obj) == (300, 0)
        assert (pb.delivered, pb.lost) == (300, 0)


def test_overflow_lost_counted_exactly_from_the_kernels_lost_records():
    """1,500 samples into one CPU's one-page ring (room for 51): the kernel
    refuses the rest; once a later sample reaches that ring (the kernel writes
    its lost record just before it), lost == what the producer saw refused and
    delivered + lost == produced."""
    with load() as obj, one_cpu():
        pb = obj.perf_buffer("events", event="sample64", pages=1)
        sent = produce(obj, 1500)
        assert sent == PAGE // REC64                    # the ring filled, the rest refused
        first = pb.read()
        assert pb.lost == 0                             # not written yet: the ring was full
        sent += produce(obj, 1)                         # the lost record goes in first
        rest = pb.read()
        tried, refused = counts(obj)
        assert tried == 1501 and refused == 1500 - PAGE // REC64
        assert pb.lost == refused
        assert pb.delivered == sent == len(first) + len(rest)
        assert pb.delivered + pb.lost == tried
        assert [r.seq for r in first + rest] == list(range(sent))   # refused ones took no seq


@pytest.mark.parametrize("how", ["events", "batch"])
def test_records_wrapping_around_the_end_of_a_ring_are_joined(how):
    """One-page ring, rounds of 37 samples drained between rounds: records
    cross the end of the ring (counted from their positions) and every one
    arrives intact, per event and in batches."""
    rounds, per = 12, 37
    with load() as obj, one_cpu():
        pb = obj.perf_buffer("events", event="sample64", pages=1)
        seqs: List[int] = []
        for _ in range(rounds):
            assert produce(obj, per) == per
            if how == "events":
                got = pb.read()
                for r in got:
                    check_sample64(r, r.seq)
                seqs += [r.seq for r in got]
            else:
                arr = pb.read_batch()
                assert (arr["pad"] == (arr["seq"] ^ np.uint64(MAGIC))[:, None]).all()
                seqs += arr["seq"].tolist()
        assert seqs == list(range(rounds * per))
        assert wraps([REC64] * rounds * per, PAGE) >= 5
        assert pb.lost == 0


def test_variable_size_samples_and_their_wrap_around():
    """Samples of 8 to 256 bytes (every length mod 8) as bytes: each is what
    the program sent, then the kernel's padding to keep records 8-aligned;
    many wrap around the end of the one-page ring."""
    total, per = 600, 25
    with load() as obj, one_cpu():
        pb = obj.perf_buffer("events", pages=1)         # no event=: bytes
        got: List[bytes] = []
        for _ in range(total // per):
            assert produce(obj, per, "produce_var") == per
            got += pb.read()
        assert len(got) == total
        for seq, b in enumerate(got):
            want = var_payload(seq)
            assert len(b) == padded(len(want)) and b[:len(want)] == want, seq
        sizes = [8 + 4 + padded(var_len(s)) for s in range(total)]
        assert wraps(sizes, PAGE) >= 10
        assert {var_len(s) % 8 for s in range(total)} == set(range(8))


def test_batches_use_the_events_dtype_from_btf():
    """read_batch(): rows of the BTF struct's numpy dtype; iter_batches()
    yields what arrives; max_records limits a batch."""
    with load() as obj, one_cpu():
        pb = obj.perf_buffer("events", event="sample64")
        assert pb.dtype.names == ("seq", "pad") and pb.dtype.itemsize == 64
        produce(obj, 200)
        a = pb.read_batch(50)
        b = pb.read_batch()
        assert len(a) == 50 and len(b) == 150
        seq = np.concatenate([a["seq"], b["seq"]])
        assert (seq == np.arange(200)).all()
        assert (b["pad"][:, 3] == b["seq"] ^ np.uint64(MAGIC)).all()
        produce(obj, 30)
        batches = list(pb.iter_batches(timeout=0.5))
        assert sum(len(x) for x in batches) == 30
        assert pb.read_batch().size == 0
        assert pb.delivered == 230


def test_zero_copy_views_and_a_kept_view_refused():
    """consume_views(): read-only views into the rings, every sample once
    (including one that wraps, delivered copied); a callback that keeps its
    view gets CallbackError, and the samples still count as consumed."""
    with load() as obj, one_cpu():
        pb = obj.perf_buffer("events", event="sample64", pages=1)
        seqs: List[int] = []
        views = [0]

        def cb(rows: Any) -> None:
            views[0] += not rows.flags.writeable         # a view (copies are writeable)
            seqs.extend(rows["seq"].tolist())
            assert (rows["pad"][:, 0] == rows["seq"] ^ np.uint64(MAGIC)).all()

        for _ in range(6):
            produce(obj, 37)
            pb.consume_views(cb)
        assert seqs == list(range(6 * 37)) and pb.delivered == 6 * 37
        assert views[0] >= 6
        kept: List[Any] = []
        produce(obj, 20)
        with pytest.raises(CallbackError, match="copy"):
            pb.consume_views(kept.append)
        kept.clear()
        assert pb.read() == [] and pb.delivered == 6 * 37 + 20


def test_asyncio_reads_a_perf_buffer():
    """``async for`` over the buffer, pytracers.aio.read and array batches."""
    async def main(obj: Any, pb: PerfBuffer) -> None:
        produce(obj, 20)
        got = []
        async for rec in aio.events(pb, timeout=LONG):
            got.append(rec.seq)
            if len(got) == 20:
                break
        assert got == list(range(20))
        assert await aio.read(pb, 0.05) == []
        produce(obj, 10)
        arrays = []
        async for arr in aio.batches(pb, timeout=LONG, arrays=True):
            arrays.append(arr)
            if sum(map(len, arrays)) == 10:
                break
        assert np.concatenate(arrays)["seq"].tolist() == list(range(20, 30))

    with load() as obj, one_cpu():
        pb = obj.output("events", event="sample64", wakeup_events=4)
        asyncio.run(main(obj, pb))


def test_two_threads_share_every_sample_exactly_once():
    """Two threads iterate one buffer's events() while 2,000 samples arrive:
    each seq reaches exactly one of them."""
    n = 2000
    with load() as obj:
        pb = obj.perf_buffer("events", event="sample64", pages=128)
        seen: List[List[int]] = [[], []]

        def reader(k: int) -> None:
            try:
                for r in pb.events():
                    seen[k].append(r.seq)
            except ClosedError:
                pass

        threads = [threading.Thread(target=reader, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        with one_cpu():
            sent = produce(obj, n)
        deadline = time.monotonic() + LONG
        while len(seen[0]) + len(seen[1]) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        pb.close()
        for t in threads:
            t.join(LONG)
        assert sent == n and pb.lost == 0
        assert sorted(seen[0] + seen[1]) == list(range(n))


def test_close_from_another_thread_ends_a_blocked_read_at_once():
    with load() as obj:
        pb = obj.perf_buffer("events", event="sample64")
        out: List[BaseException] = []

        def blocked() -> None:
            try:
                pb.poll(None, lambda r: None)
            except BaseException as e:      # the test checks what it is
                out.append(e)

        t = threading.Thread(target=blocked)
        t.start()
        deadline = time.monotonic() + LONG
        while pb._gate.users == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        t0 = time.monotonic()
        pb.close()
        t.join(LONG)
        assert not t.is_alive()
        assert time.monotonic() - t0 < (5.0 if VM else 0.5)
        assert len(out) == 1 and isinstance(out[0], ClosedError)
        with pytest.raises(ClosedError):
            pb.read()


def test_a_read_inside_its_own_callback_is_busy():
    with load() as obj, one_cpu():
        pb = obj.perf_buffer("events", event="sample64")
        produce(obj, 2)
        errors: List[BaseException] = []

        def cb(rec: Any) -> None:
            try:
                pb.read()
            except BusyError as e:
                errors.append(e)

        assert pb.consume(cb) == 2
        assert len(errors) == 2 and "perf buffer 'events'" in str(errors[0])


# ---- wakeups -----------------------------------------------------------------------------

def _woken(pb: PerfBuffer, timeout: float) -> bool:
    return bool(select.select([pb.fileno()], [], [], timeout)[0])


def test_wakeup_by_event_count():
    """wakeup_events=10: nine samples wake no one, the tenth does; the nine
    are still delivered within the latency bound by a blocking read."""
    with load() as obj, one_cpu():
        pb = obj.perf_buffer("events", event="sample64", wakeup_events=10)
        produce(obj, 9)
        assert not _woken(pb, 0.3)
        produce(obj, 1)
        assert _woken(pb, 5.0)
        assert len(pb.read()) == 10
        produce(obj, 3)
        t0 = time.monotonic()
        assert len(pb.read(timeout=LONG)) == 3
        assert time.monotonic() - t0 < pb.latency + (5.0 if VM else 0.5)


def test_wakeup_by_watermark_bytes():
    """wakeup_bytes=1600 (20 records): 15 records wake no one, 10 more do."""
    with load() as obj, one_cpu():
        pb = obj.perf_buffer("events", event="sample64", wakeup_bytes=20 * REC64)
        assert (pb.wakeup_bytes, pb.wakeup_events) == (1600, None)
        produce(obj, 15)
        assert not _woken(pb, 0.3)
        produce(obj, 10)
        assert _woken(pb, 5.0)
        assert len(pb.read()) == 25


# ---- choosing the reader, arguments, lifetime ---------------------------------------------

def test_output_picks_the_reader_by_map_type_and_ring_buffer_names_the_way():
    with load() as obj:
        with pytest.raises(BadArgumentError) as e:
            obj.ring_buffer("events")
        assert "perf_buffer()" in str(e.value) and "output()" in str(e.value)
        with pytest.raises(BadArgumentError, match="not an output map"):
            obj.output("counts")
        with pytest.raises(BadArgumentError, match="not a perf event array"):
            obj.perf_buffer("counts")
    o = pytracers.open(pytracers.object_path("bench"))
    o.only("fill_64")
    o.maps["events"].max_entries = 1 << 16
    with o.load() as ring_obj:
        rb = ring_obj.output("events", event="bench_rec64")
        assert isinstance(rb, RingBuffer)
        with pytest.raises(BadArgumentError, match="ring_buffer"):
            ring_obj.perf_buffer("events")
        with pytest.raises(BadArgumentError, match="pages only apply to perf buffers"):
            ring_obj.output("events", pages=4)


@pytest.mark.parametrize("kw, word", [
    ({"pages": 3}, "power of two"), ({"pages": 0}, "power of two"),
    ({"wakeup_events": 2, "wakeup_bytes": 8}, "not both"),
    ({"wakeup_bytes": 1 << 30}, "wakeup_bytes"), ({"wakeup_events": 0}, "wakeup_events"),
    ({"latency": 0}, "latency"),
])
def test_bad_arguments_are_refused_before_anything_is_opened(kw, word):
    with load() as obj:
        with pytest.raises(BadArgumentError, match=word):
            obj.perf_buffer("events", **kw)


def test_close_twice_context_manager_object_close_and_map_entries_removed():
    """close() is safe twice; ``with`` closes; closing the object closes its
    perf buffer; once closed, the map's entries are gone (a sample finds no
    event: the kernel refuses it) and no fd is left (the autouse leak check)."""
    with load() as obj, one_cpu():
        with obj.perf_buffer("events", event="sample64") as pb:
            assert produce(obj, 3) == 3
            assert len(pb.read()) == 3
        assert pb.closed
        pb.close()
        assert produce(obj, 5) == 0                     # no perf event in the map any more
        for _ in range(20):
            obj.perf_buffer("events", pages=1).close()
        kept = obj.perf_buffer("events")
    assert kept.closed


def test_reopening_after_close_reads_new_samples():
    with load() as obj, one_cpu():
        obj.perf_buffer("events").close()
        pb = obj.output("events", event="sample64")
        assert produce(obj, 4) == 4
        assert [r.seq for r in pb.read()] == [0, 1, 2, 3]


# ---- the parsing core on a synthetic ring ---------------------------------------------------

@pytest.mark.kernel_independent
def test_reader_joins_a_record_split_at_its_raw_size_and_a_wrapped_lost_record():
    """A ring of 64 bytes: a lost record (24 bytes) split across the end,
    then a sample whose 8-byte header ends exactly at the end (its raw size
    and data start at 0): both parsed; the tail lands past them."""
    size = 64
    ring = bytearray(PAGE + size)
    data = PAGE

    def put(pos: int, rec: bytes) -> None:
        for i, b in enumerate(rec):
            ring[data + (pos + i) % size] = b

    lost = struct.pack("<IHHQQ", 2, 0, 24, 7, 5)          # PERF_RECORD_LOST: id 7, 5 lost
    payload = b"abcdefghijkl"                             # raw size 12: record of 24
    sample = struct.pack("<IHHI", 9, 0, 24, len(payload)) + payload
    start = 48                                            # lost: 48..64 + 0..8
    put(start, lost)
    put(start + 24, sample)                               # at 8..32
    head = start + 48
    struct.pack_into("<Q", ring, 1024, head)
    struct.pack_into("<Q", ring, 1032, start)
    r = PerfReader([ring], size)
    got: List[bytes] = []
    assert r.consume(got.append) == 1
    assert got == [payload] and r.lost == 5
    assert struct.unpack_from("<Q", ring, 1032)[0] == head
    # a sample whose header fills the ring's last 8 bytes
    start = head + (size - 8 - head % size)               # header at 56..64
    struct.pack_into("<Q", ring, 1032, start)
    put(start, sample)
    struct.pack_into("<Q", ring, 1024, start + 24)
    assert r.consume(got.append) == 1 and got[-1] == payload
    arr_dtype = np.dtype([("a", "<u4"), ("b", "<u4"), ("c", "<u4")])
    put(start + 24, sample)                               # the same record again, for a batch
    struct.pack_into("<Q", ring, 1024, start + 48)
    rows = r.read_batch(dtype=arr_dtype)
    assert rows.tobytes() == payload and r.delivered == 3
