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
from typing import Any, Iterator, List, Optional

import numpy as np
import pytest

import pytracers
import pytracers.aio as aio
from pytracers.errors import BadArgumentError, BusyError, CallbackError, ClosedError
from pytracers.perfbuf import PerfBuffer, PerfReader
from pytracers.ringbuf import RingBuffer

pytestmark = pytest.mark.kind("raw_tp")

HERE = os.path.dirname(os.path.abspath(__file__))
OBJ = os.path.join(HERE, "objects", "perf_output.bpf.o")
PAGE = os.sysconf("SC_PAGE_SIZE")
MAGIC = 0x5A5A5A5A5A5A5A5A
REC64 = 80                 # record of a 64-byte sample: 8 + 4 + 68 (padded)
VM = bool(os.environ.get("PYTRACERS_VM_KERNEL"))
LONG = 60.0 if VM else 10.0


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


class _FencedRing:
    """A synthetic perf ring of ``n`` 64-byte samples (80-byte records, the
    last wrapping around the end when ``wrap``) whose reader's fence and
    tail stores are logged in order with the deliveries: ``log`` holds "F"
    (a barrier), "D" (samples handed to the caller) and "T" (data_tail
    stored)."""

    def __init__(self, n: int, wrap: bool, wrap_at: Optional[int] = None) -> None:
        size = 1 << max(12, (n * REC64 - 1).bit_length())
        self.size = size
        self.ring = bytearray(PAGE + size)
        at = n - 1 if wrap_at is None else wrap_at               # this record wraps
        start = (size - at * REC64 - 40) if wrap else 0
        for seq in range(n):
            rec = struct.pack("<IHHI", 9, 0, REC64, 68) + struct.pack("<8Q", *([seq] * 8)) \
                + b"\0" * 4
            for i, b in enumerate(rec):
                self.ring[PAGE + (start + seq * REC64 + i) % size] = b
        self.head = start + n * REC64
        struct.pack_into("<Q", self.ring, 1024, self.head)        # data_head
        struct.pack_into("<Q", self.ring, 1032, start)            # data_tail
        self.log: List[str] = []
        self.reader = PerfReader([self.ring], size, fence=lambda: self.log.append("F"),
                                 dtype=np.dtype([("seq", "<u8"), ("pad", "<u8", 7)]))
        orig = self.reader._set_tail

        def set_tail(ring: Any, tail: int) -> None:
            orig(ring, tail)
            self.log.append("T")
        self.reader._set_tail = set_tail        # type: ignore[method-assign]


@pytest.mark.kernel_independent
@pytest.mark.parametrize("path", ["consume", "read_batch", "consume_views"])
@pytest.mark.parametrize("n,wrap", [(3, False), (200, False), (200, True)])
def test_fences_order_head_data_tail(path, n, wrap):
    """With a fence (what arm64 gets), data_head is followed by a barrier
    before any sample is delivered, every store of data_tail is preceded by
    a barrier issued after the last delivery, and the number of barriers
    follows the runs, not the samples."""
    r = _FencedRing(n, wrap)
    seqs: List[int] = []
    if path == "consume":
        def cb(rec: bytes) -> None:
            r.log.append("D")
            seqs.append(struct.unpack_from("<Q", rec)[0])
        assert r.reader.consume(cb) == n
    elif path == "read_batch":
        rows = r.reader.read_batch()
        r.log.append("D")                       # the copy was made inside the call
        seqs = rows["seq"].tolist()
    else:
        def vcb(rows: Any) -> None:
            r.log.append("D")
            seqs.extend(rows["seq"].tolist())
        assert r.reader.consume_views(vcb) == n
    assert seqs == list(range(n))
    assert struct.unpack_from("<Q", r.ring, 1032)[0] == r.head
    log = "".join(r.log)
    assert "F" in log[:log.index("D")]          # data_head's barrier came first
    for i, ev in enumerate(log):
        if ev == "T":                           # release: a barrier since the last delivery
            before = log[:i]
            assert "F" in before[before.rfind("D") + 1:] or path == "read_batch", log
    if path == "read_batch":                    # the tail moved inside the call, after a barrier
        inner = log[:log.index("D")]
        assert inner.endswith("FT") or "FT" in inner, log
    assert log.count("F") <= (4 * n if n < 8 else 16), log


@pytest.mark.kernel_independent
def test_the_reader_gets_a_fence_where_the_machine_needs_one():
    """x86-64 reads with plain loads; any other machine's perf buffer gets
    libatomic's barrier (the reader refused to run there before)."""
    from pytracers.eventbuf import ring_fence
    with load() as obj, obj.perf_buffer("events") as pb:
        assert (pb._reader._fence is None) == (os.uname().machine == "x86_64")
        assert (pb._reader._fence is None) == (ring_fence() is None)


@pytest.mark.kernel_independent
def test_views_of_a_long_run_come_a_piece_at_a_time(monkeypatch):
    """consume_views hands a long run over in pieces of at most ``_CHUNK``
    bytes (16 records here), in order (the last few, short of a run, and the
    record wrapped around the end come together, copied)."""
    import pytracers.perfbuf.records as records
    monkeypatch.setattr(records, "_CHUNK", 16 * REC64)
    r = _FencedRing(200, wrap=True)
    pieces: List[int] = []
    seqs: List[int] = []

    def cb(rows: Any) -> None:
        pieces.append(len(rows))
        seqs.extend(rows["seq"].tolist())
    assert r.reader.consume_views(cb) == 200
    assert seqs == list(range(200))
    assert max(pieces) == 16 and sum(pieces) == 200 and pieces[:12] == [16] * 12
    assert struct.unpack_from("<Q", r.ring, 1032)[0] == r.head


def test_a_fenced_reader_reads_real_rings_exactly(monkeypatch):
    """The reader arm64 gets (libatomic's barrier after data_head, before
    data_tail), forced here: 2,000 samples through a 4-page ring (it wraps
    and overflows), read per event, in batches and as views: every sample
    once, pads intact, delivered + lost == sent + refused."""
    import pytracers.perfbuf.buffer as pbuf
    from pytracers._libbpf import full_fence
    calls = [0]
    fence = full_fence()

    def counting() -> None:
        calls[0] += 1
        fence()
    monkeypatch.setattr(pbuf, "ring_fence", lambda: counting)
    with load() as obj, one_cpu():
        pb = obj.perf_buffer("events", event="sample64", pages=4)
        assert pb._reader._fence is counting
        seqs: List[int] = []
        bad: List[int] = []
        for i in range(20):
            produce(obj, 100)
            if i % 3 == 0:
                recs = pb.read()
                seqs += [r.seq for r in recs]
                bad += [r.seq for r in recs if r.pad != (r.seq ^ MAGIC,) * 7]
            elif i % 3 == 1:
                rows = pb.read_batch()
                seqs += rows["seq"].tolist()
                bad += rows["seq"][(rows["pad"] != (rows["seq"] ^ MAGIC)[:, None]).any(axis=1)
                                   ].tolist()
            else:
                def vcb(rows: Any) -> None:
                    seqs.extend(rows["seq"].tolist())
                    bad.extend(rows["seq"][(rows["pad"] != (rows["seq"] ^ MAGIC)[:, None])
                                           .any(axis=1)].tolist())
                pb.consume_views(vcb)
        produce(obj, 1)                         # a later sample brings the last lost record
        seqs += [r.seq for r in pb.read()]
        tried, refused = counts(obj)
        assert not bad
        assert len(seqs) == len(set(seqs)) == tried - refused
        assert pb.delivered == len(seqs) and pb.lost == refused
        assert calls[0] >= 40                   # barriers ran, per run rather than per sample
        assert calls[0] < len(seqs)


@pytest.mark.kernel_independent
@pytest.mark.parametrize("misc", [False, True])
def test_batch_of_a_long_run_is_copied_a_piece_at_a_time(monkeypatch, misc):
    """read_batch copies a long run in pieces (16 records here), the piece
    across the end of the ring joined and the pieces after it read from the
    start: exact rows, the tail past them; headers whose misc differs (the
    kernel sets it per sample) are still one run."""
    import pytracers.perfbuf.records as records
    monkeypatch.setattr(records, "_CHUNK", 16 * REC64)
    r = _FencedRing(200, wrap=True, wrap_at=40)
    if misc:                                    # misc of every 3rd record: PERF_RECORD_MISC_USER
        start = struct.unpack_from("<Q", r.ring, 1032)[0]
        for seq in range(0, 200, 3):
            off = PAGE + (start + seq * REC64 + 4) % r.size
            struct.pack_into("<H", r.ring, off, 2)
    rows = r.reader.read_batch()
    assert rows["seq"].tolist() == list(range(200))
    assert (rows["pad"] == rows["seq"][:, None]).all()
    assert struct.unpack_from("<Q", r.ring, 1032)[0] == r.head


def _producer(obj: Any, cpu: int, stop: threading.Event, errors: List[BaseException]) -> None:
    try:
        os.sched_setaffinity(0, {cpu})          # this thread only: its samples go to that ring
        while not stop.is_set():
            produce(obj, 64)
    except BaseException as e:  # pragma: no cover - reported by the test
        errors.append(e)


def test_stress_producers_on_every_cpu_every_sample_whole():
    """Producers on every CPU write 64-byte samples (every pad word
    seq ^ MAGIC) into their CPUs' rings while this thread reads them on all
    three paths: a sample read before its data was visible would show an
    older lap's words (what the barriers prevent on arm64: run there by
    scripts/vmtest --arch arm64).  Then every sample is accounted for:
    delivered + lost == tried, lost == refused."""
    # On one CPU (the x86-64 guests of the matrix) the producer and this
    # reader take turns: no reads race the writes across CPUs then, but the
    # wrap-around, overflow and accounting checks below still hold.
    cpus = sorted(os.sched_getaffinity(0))
    seconds = 6.0 if VM else 1.5
    bad: List[int] = []
    got = [0]

    def check(seq: Any, pad: Any) -> None:
        got[0] += len(seq)
        wrong = (pad != (seq ^ np.uint64(MAGIC))[:, None]).any(axis=1)
        bad.extend(seq[wrong][:3].tolist())

    with load() as obj:
        pb = obj.perf_buffer("events", event="sample64", pages=2)     # wraps all the time
        stop = threading.Event()
        errors: List[BaseException] = []
        threads = [threading.Thread(target=_producer, args=(obj, c, stop, errors))
                   for c in cpus[:4]]
        for t in threads:
            t.start()
        try:
            end = time.monotonic() + seconds
            i = 0
            while time.monotonic() < end:
                i += 1
                if i % 3 == 0:
                    evs = pb.read()
                    if evs:
                        check(np.array([e.seq for e in evs], np.uint64),
                              np.array([list(e.pad) for e in evs], np.uint64))
                elif i % 3 == 1:
                    rows = pb.read_batch()
                    check(rows["seq"], rows["pad"])
                else:
                    pb.consume_views(lambda rows: check(rows["seq"], rows["pad"]))
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors
        rows = pb.read_batch()
        check(rows["seq"], rows["pad"])
        before = os.sched_getaffinity(0)
        try:
            for c in cpus[:4]:                  # one more sample per CPU writes its lost record
                os.sched_setaffinity(0, {c})
                produce(obj, 1)
        finally:
            os.sched_setaffinity(0, before)
        rows = pb.read_batch()
        check(rows["seq"], rows["pad"])
        tried, refused = counts(obj)
    assert not bad, f"samples read before their data: {bad[:3]}"
    assert got[0] == pb.delivered
    accounts = (f"delivered {pb.delivered}, lost {pb.lost}, other records {pb._reader.other}, "
                f"tried {tried}, refused {refused}")
    assert pb.delivered == tried - refused and pb.lost == refused, accounts
    assert got[0] > 1000                        # the reader kept up with a good share
