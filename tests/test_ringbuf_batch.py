"""The ring-buffer reader returns exactly the records produced, per event and
in numpy batches.

Two producers:

* the kernel: bench.bpf.o's fill_8/fill_64 run with BPF_PROG_TEST_RUN write
  numbered records (``seq`` consecutive from 0 per loaded object, every pad
  word equal to ``seq``; with ctx[1] = k every record whose seq % k == k - 1
  is discarded instead of submitted) into a small ring that wraps around
  many times during a test;
* a synthetic ring: plain memory laid out like the kernel's (consumer page,
  producer page, data area twice in a row), driven through the same parsing
  core (:class:`~pytracers.ringbuf.RingReader`).  It produces what a kernel
  producer cannot leave behind for a test: a record still BUSY with
  complete records after it, and records of arbitrary lengths.
"""
from __future__ import annotations

import os
import struct
import threading
import time

import numpy as np
import pytest

import pytracers
from pytracers.btf import Btf
from pytracers.errors import BadArgumentError, CallbackError
from pytracers.ringbuf import _MIN_RUN, BUSY_BIT, DISCARD_BIT, HEADER_SIZE, RingReader

BENCH = pytracers.object_path("bench")
PAGE = os.sysconf("SC_PAGE_SIZE")
BTF = Btf.from_elf(BENCH)
REC8 = BTF.struct_layout("bench_rec8")
REC64 = BTF.struct_layout("bench_rec64")


def rec64(seq: int) -> bytes:
    return struct.pack("<8Q", *([seq] * 8))


def expected_seqs(start: int, stop: int, k: int) -> list:
    return [s for s in range(start, stop) if not (k and s % k == k - 1)]


# ---- a synthetic ring ------------------------------------------------------------------

class FakeRing:
    """Memory laid out like a kernel ring buffer, filled by the test."""

    def __init__(self, size: int = PAGE, start: int = 0) -> None:
        self.size = size
        self.cons = bytearray(PAGE)
        self.data = bytearray(PAGE + 2 * size)
        self.prod = start
        struct.pack_into("<Q", self.cons, 0, start)
        self._publish()

    def _publish(self) -> None:
        struct.pack_into("<Q", self.data, 0, self.prod)

    def _write(self, pos: int, raw: bytes) -> None:
        p = pos & (self.size - 1)
        first = min(len(raw), self.size - p)
        self.data[PAGE + p:PAGE + p + first] = raw[:first]
        self.data[PAGE:PAGE + len(raw) - first] = raw[first:]
        # the second mapping of the data area mirrors the first
        self.data[PAGE + self.size:PAGE + 2 * self.size] = self.data[PAGE:PAGE + self.size]

    def put(self, payload: bytes, *, busy: bool = False, discard: bool = False) -> int:
        hdr = len(payload) | (BUSY_BIT if busy else 0) | (DISCARD_BIT if discard else 0)
        raw = struct.pack("<II", hdr, 0) + payload
        raw += bytes(-len(raw) % 8)
        assert self.prod + len(raw) - self.consumer_pos() <= self.size, "fake ring overflow"
        pos = self.prod
        self._write(pos, raw)
        self.prod += len(raw)
        self._publish()
        return pos

    def set_header(self, pos: int, length: int, *, busy: bool = False,
                   discard: bool = False) -> None:
        hdr = length | (BUSY_BIT if busy else 0) | (DISCARD_BIT if discard else 0)
        self._write(pos, struct.pack("<I", hdr))

    def consumer_pos(self) -> int:
        return int(struct.unpack_from("<Q", self.cons)[0])

    def reader(self, **kw) -> RingReader:
        return RingReader(self.cons, self.data, self.size, **kw)


def fill_fake(ring: FakeRing, seqs, *, discard_every: int = 0) -> list:
    """put rec64(seq) for each seq; discard those with seq % k == k - 1."""
    kept = []
    for s in seqs:
        d = bool(discard_every) and s % discard_every == discard_every - 1
        ring.put(rec64(s), discard=d)
        if not d:
            kept.append(s)
    return kept


def per_event(reader: RingReader, limit=None) -> list:
    out: list = []
    reader.consume(out.append, limit)
    return out


def test_synthetic_busy_record_stops_both_paths_across_wraparound():
    stride = 72
    for path in ("batch", "event"):
        # start a few records before the end of the data area, at a large
        # position, so the run wraps around the end of the ring
        ring = FakeRing(start=7 * PAGE - 3 * stride)
        kept = fill_fake(ring, range(20), discard_every=4)
        busy_pos = ring.put(rec64(20), busy=True)
        kept_after = fill_fake(ring, range(21, 26))
        r = ring.reader(layout=REC64, dtype=REC64.numpy_dtype())
        got = (list(r.read_batch()["seq"]) if path == "batch"
               else [rec.seq for rec in per_event(r)])
        assert got == kept
        assert ring.consumer_pos() == busy_pos           # stopped at the BUSY record
        assert r.discarded == 5 and r.delivered == 15
        # nothing more while it stays busy
        assert len(r.read_batch()) == 0 and per_event(r) == []
        ring.set_header(busy_pos, 64)                    # the producer commits it
        got = (list(r.read_batch()["seq"]) if path == "batch"
               else [rec.seq for rec in per_event(r)])
        assert got == [20] + kept_after
        assert ring.consumer_pos() == ring.prod


@pytest.mark.parametrize("path", ["read_batch", "consume_views"])
@pytest.mark.parametrize("case", ["whole", "discard", "busy", "other_length"])
def test_synthetic_long_runs_go_a_piece_at_a_time(monkeypatch, path, case):
    """A run longer than a piece (``_CHUNK``, made 16 records here) is checked
    and copied or handed over piece by piece, across the end of the ring: the
    rows are exactly the complete records in order; a discarded record, a BUSY
    one or one of another length in a later piece ends the fast path there and
    the rest is read as before (discarded skipped and counted, BUSY stops, the
    other length zero-filled)."""
    import pytracers.ringbuf.records as records
    stride = 72
    monkeypatch.setattr(records, "_CHUNK", 16 * stride)
    ring = FakeRing(size=8 * PAGE, start=8 * PAGE - 37 * stride)   # wraps after 37
    n = 300
    special = {"whole": None, "discard": 170, "busy": 250, "other_length": 200}[case]
    stop_pos = None
    want = []
    for seq in range(n):
        if seq == special and case == "discard":
            ring.put(rec64(seq), discard=True)
            continue
        if seq == special and case == "busy":
            stop_pos = ring.put(rec64(seq), busy=True)
            continue
        if seq == special and case == "other_length":
            ring.put(rec64(seq)[:24])
            want.append(seq)
            continue
        ring.put(rec64(seq))
        if stop_pos is None:
            want.append(seq)
    r = ring.reader(layout=REC64, dtype=REC64.numpy_dtype())
    pieces: list = []
    if path == "read_batch":
        rows = r.read_batch()
        got = rows["seq"].tolist()
        if case == "other_length":
            assert rows["pad"][want.index(special)].tolist() == [special] * 2 + [0] * 5
    else:
        got = []

        def cb(rows):
            pieces.append(len(rows))
            got.extend(rows["seq"].tolist())
        assert r.consume_views(cb) == len(want)
    assert got == want
    assert r.delivered == len(want)
    assert r.discarded == (1 if case == "discard" else 0)
    assert ring.consumer_pos() == (stop_pos if case == "busy" else ring.prod)
    if path == "consume_views":                # one callback per piece up to the odd record
        whole = (special if special is not None else n) // 16     # pieces before the odd one
        assert pieces[:whole] == [16] * whole
        if special is None:
            assert sum(pieces) == n and max(pieces) == 16


def test_synthetic_busy_first_record_gives_nothing():
    ring = FakeRing()
    pos = ring.put(rec64(0), busy=True)
    fill_fake(ring, range(1, 30))
    r = ring.reader(layout=REC64, dtype=REC64.numpy_dtype())
    assert len(r.read_batch()) == 0
    assert per_event(r) == []
    assert ring.consumer_pos() == pos


def test_synthetic_short_records_decoded_zero_filled_per_event():
    """A record shorter than the layout (a producer sending only the used part
    of a trailing buffer) is decoded per event from its own bytes, zero-filled:
    never from the bytes of the records after it."""
    ring = FakeRing(start=PAGE - 40)
    lengths = [8, 24, 64, 16, 8, 8, 8, 8, 8, 8, 8, 8, 40]       # a run of 8-byte ones too
    payloads = [rec64(s)[:n] for s, n in enumerate(lengths)]
    for p in payloads:
        ring.put(p)
    r = ring.reader(layout=REC64)
    got = per_event(r)
    want = [struct.unpack("<8Q", p + bytes(64 - len(p))) for p in payloads]
    assert [(g.seq, *g.pad) for g in got] == want
    assert [g.seq for g in got] == list(range(len(lengths)))
    assert [sum(1 for w in g.pad if w) for g in got] == [(n - 8) // 8 for n in lengths]
    assert ring.consumer_pos() == ring.prod


def test_synthetic_variable_size_records_slow_path():
    """Records of other lengths among fixed-size ones: the batch rows hold what
    fits in the dtype (zero-filled), per-event bytes are exact."""
    ring = FakeRing(start=PAGE - 40)
    payloads = []
    for s in range(40):
        if s % 9 == 3:
            p = struct.pack("<Q", s)                     # 8 bytes: shorter than the dtype
        elif s % 9 == 6:
            p = rec64(s) + b"\xee" * 36                  # 100 bytes: longer
        else:
            p = rec64(s)
        payloads.append(p)
    # two passes over the same records: bytes per event, then batch
    for p in payloads:
        ring.put(p)
    start = ring.consumer_pos()
    r = ring.reader()
    assert per_event(r) == payloads
    struct.pack_into("<Q", ring.cons, 0, start)
    r = ring.reader(dtype=REC64.numpy_dtype())
    arr = r.read_batch()
    assert list(arr["seq"]) == list(range(40))
    for row, p in zip(arr, payloads):
        if len(p) == 8:
            assert (row["pad"] == 0).all()
        else:
            assert (row["pad"] == row["seq"]).all()
    assert ring.consumer_pos() == ring.prod


@pytest.mark.parametrize("layout", [REC8, REC64], ids=["plain", "array"])
def test_run_decoding_equals_the_layout_decoder(layout):
    """A run of records is decoded in one go (struct.iter_unpack for plain
    layouts, map() over offsets otherwise); the records must equal what the
    BTF decoder gives for each record alone."""
    n = 3 * _MIN_RUN + 1
    ring = FakeRing(size=4 * PAGE, start=4 * PAGE - 100)
    payloads = [struct.pack("<Q", s) + struct.pack("<Q", s * 3) * ((layout.size - 8) // 8)
                for s in range(n)]
    for p in payloads:
        ring.put(p)
    got = per_event(ring.reader(layout=layout))
    dec = layout.decoder()
    assert got == [dec(p, 0) for p in payloads]
    assert all(type(g) is type(dec(payloads[0], 0)) for g in got)


def test_callback_stop_exception_and_bad_return_positions():
    ring = FakeRing(size=4 * PAGE)
    fill_fake(ring, range(40))
    r = ring.reader(layout=REC64)
    seen: list = []

    def stop_at_5(rec):
        seen.append(rec.seq)
        return False if rec.seq == 5 else None

    assert r.consume(stop_at_5) == 6
    assert seen == list(range(6))
    assert ring.consumer_pos() == 6 * 72

    def boom(rec):
        if rec.seq == 8:
            raise KeyError("boom")

    with pytest.raises(KeyError):
        r.consume(boom)
    assert ring.consumer_pos() == 9 * 72                 # moved past the record that raised
    with pytest.raises(CallbackError):
        r.consume(lambda rec: "yes")
    assert ring.consumer_pos() == 10 * 72
    assert r.consume(lambda rec: -1) == 1                # a negative int stops too
    assert [rec.seq for rec in per_event(r, limit=3)] == [11, 12, 13]
    assert [rec.seq for rec in per_event(r)] == list(range(14, 40))
    assert r.delivered == 40


def test_batch_max_records_and_bad_arguments():
    ring = FakeRing(size=4 * PAGE)
    kept = fill_fake(ring, range(50), discard_every=3)
    r = ring.reader(dtype=REC64.numpy_dtype())
    a = r.read_batch(7)
    b = r.read_batch(0)
    c = r.read_batch()
    assert len(a) == 7 and len(b) == 0
    assert list(a["seq"]) + list(c["seq"]) == kept
    assert a.dtype == REC64.numpy_dtype()
    with pytest.raises(BadArgumentError):
        r.read_batch(-1)
    with pytest.raises(BadArgumentError):
        RingReader(bytearray(8), bytearray(PAGE * 3), 3 * 1024)


@pytest.mark.parametrize("layout", [REC8, REC64], ids=["packed", "strided"])
def test_batch_rows_are_copies(layout):
    """A batch must not alias the ring: the producer reuses the space."""
    for n in (1, 10):
        ring = FakeRing()
        for s in range(100, 100 + n):
            ring.put(rec64(s)[:layout.size])
        ring.put(rec64(0)[:layout.size], busy=True)   # a run of n (numpy calls a 1-row view contiguous)
        arr = ring.reader(dtype=layout.numpy_dtype()).read_batch()
        ring.data[:] = bytes(len(ring.data))
        assert list(arr["seq"]) == list(range(100, 100 + n))
        assert arr.dtype == layout.numpy_dtype()
        if layout is REC64:
            assert (arr["pad"] == arr["seq"][:, None]).all()


def test_views_are_zero_copy_and_must_not_escape():
    ring = FakeRing(size=4 * PAGE, start=4 * PAGE - 200)
    r = ring.reader(dtype=REC64.numpy_dtype())
    got: list = []
    kinds: list = []

    def take(rows):
        assert rows.dtype == REC64.numpy_dtype()
        kinds.append("view" if np.shares_memory(rows, ring.data) else "copy")
        assert kinds[-1] == "copy" or not rows.flags.writeable
        got.extend(rows["seq"].tolist())

    fill_fake(ring, range(10))
    busy = ring.put(rec64(10), busy=True)
    assert r.consume_views(take) == 10
    assert got == list(range(10)) and ring.consumer_pos() == busy
    ring.set_header(busy, 64)
    kept = fill_fake(ring, range(11, 30), discard_every=7)
    busy = ring.put(rec64(30), busy=True)
    assert r.consume_views(take) == 1 + len(kept)
    assert got == list(range(11)) + kept and ring.consumer_pos() == busy
    assert kinds == ["view", "copy"]        # a run with discarded records is compacted
    ring.set_header(busy, 64)
    fill_fake(ring, range(31, 60))
    # a kept view (or a view derived from it) is an error, after the position moved
    for keep in (lambda rows: rows, lambda rows: rows["seq"]):
        held: list = []
        start = ring.consumer_pos()
        with pytest.raises(CallbackError, match="copy"):
            r.consume_views(lambda rows: held.append(keep(rows)), max_records=10)
        assert ring.consumer_pos() == start + 10 * 72
        held.clear()
    copies: list = []
    assert r.consume_views(lambda rows: copies.append(rows.copy()) or False, max_records=5) == 5
    assert list(copies[0]["seq"]) == [50, 51, 52, 53, 54]
    with pytest.raises(KeyError):
        r.consume_views(lambda rows: {}["x"])
    assert ring.consumer_pos() == ring.prod            # moved past the batch that raised


# ---- the kernel ring ---------------------------------------------------------------------

def load_bench(ring_size: int, *progs: str, **config):
    o = pytracers.open(BENCH)
    o.only(*progs)
    o.maps["events"].max_entries = ring_size
    for k, v in config.items():
        o.config[k] = v
    return o.load()


def test_kernel_ring_batch_exact_across_wraparound_and_discards():
    k = 5
    with load_bench(4 * PAGE, "fill_64") as obj:
        fill = obj.programs["fill_64"]
        rb = obj.ring_buffer(event="bench_rec64")
        rows = []
        reserved = 0
        for i in range(300):                 # ~6000 records through a 227-record ring
            reserved += fill.test_run([20, k]).retval
            rows.append(rb.read_batch(max_records=None if i % 3 else 7))
        while True:
            a = rb.read_batch()
            if not len(a):
                break
            rows.append(a)
        arr = np.concatenate(rows)
        assert reserved == 6000
        assert obj.maps["lost"].sum_percpu_u64() == 0
        assert list(arr["seq"]) == expected_seqs(0, reserved, k)
        assert (arr["pad"] == arr["seq"][:, None]).all()      # every record whole
        assert rb.discarded == 6000 // k
        assert rb.delivered == len(arr)
        assert rb.pending_bytes() == 0


def test_kernel_ring_per_event_equals_batch():
    """The same records read twice -- per event, then (consumer position
    rewound) as a batch -- are the same records."""
    with load_bench(16 * PAGE, "fill_64") as obj:
        fill = obj.programs["fill_64"]
        rb = obj.ring_buffer(event="bench_rec64")
        fill.test_run([100, 0])
        rb.read_batch()                           # move off position 0
        for _ in range(8):
            fill.test_run([100, 3])
        reader = rb._reader
        start = reader.consumer_pos()
        events = rb.read()
        end = reader.consumer_pos()
        reader._set_consumer_pos(start)
        batch = rb.read_batch()
        assert reader.consumer_pos() == end
        reader._set_consumer_pos(start)
        views: list = []
        rb.consume_views(lambda rows: views.extend(rows["seq"].tolist()))
        assert reader.consumer_pos() == end
        assert views == list(batch["seq"])
        assert len(events) == len(batch)
        assert [e.seq for e in events] == list(batch["seq"])
        assert [tuple(e.pad) for e in events] == [tuple(int(x) for x in p) for p in batch["pad"]]
        assert [e.seq for e in events] == expected_seqs(100, 900, 3)


def test_kernel_ring_mixed_sizes_take_the_slow_path():
    """fill_8 and fill_64 share the seq counter and the ring."""
    with load_bench(4 * PAGE, "fill_8", "fill_64") as obj:
        rb = obj.ring_buffer(event="bench_rec64")
        sizes = {}
        seq = 0
        got = []
        for i in range(60):
            prog = "fill_8" if i % 3 == 0 else "fill_64"
            n = obj.programs[prog].test_run([5 + i % 7, 0]).retval
            for s in range(seq, seq + n):
                sizes[s] = 8 if prog == "fill_8" else 64
            seq += n
            if i % 4 == 3:
                got.append(rb.read_batch())
        got.append(rb.read_batch())
        arr = np.concatenate(got)
        assert list(arr["seq"]) == list(range(seq))
        for row in arr:
            want = 0 if sizes[int(row["seq"])] == 8 else row["seq"]
            assert (row["pad"] == want).all()


def test_kernel_ring_iter_batches_waits_for_a_producer_thread():
    with load_bench(16 * PAGE, "fill_64") as obj:
        fill = obj.programs["fill_64"]
        rb = obj.ring_buffer(event="bench_rec64", latency=0.05)

        def produce():
            for _ in range(5):
                time.sleep(0.02)
                fill.test_run([30, 0])

        t = threading.Thread(target=produce)
        t.start()
        seqs: list = []
        deadline = time.monotonic() + 10
        for arr in rb.iter_batches(timeout=10):
            assert len(arr) > 0
            seqs.extend(arr["seq"].tolist())
            if len(seqs) == 150 or time.monotonic() > deadline:
                break
        t.join()
        assert seqs == list(range(150))


def test_read_batch_needs_a_record_type():
    with load_bench(PAGE, "fill_8") as obj:
        rb = obj.ring_buffer()
        with pytest.raises(BadArgumentError, match="event="):
            rb.read_batch()
        rb2 = obj.ring_buffer(dtype=REC8.numpy_dtype())
        obj.programs["fill_8"].test_run([3, 0])
        assert list(rb2.read_batch(timeout=1.0)["seq"]) == [0, 1, 2]
