"""The parsing core of the perf-buffer reader: samples and lost-sample
records out of per-CPU perf rings (see :mod:`pytracers.perfbuf` for the
layout), on any buffers laid out like the kernel's.

:class:`PerfReader` keeps no position of its own: each ring's tail lives in
its header page, as in the kernel.  It takes no lock -- it is the
single-threaded core; :class:`~pytracers.perfbuf.PerfBuffer` serialises the
threads that read real rings and keeps the mappings alive while one of them
is inside.
"""
from __future__ import annotations

import mmap
import struct
from functools import partial
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Callable, Dict, Generator, List, Optional, Sequence, Tuple

from .._libbpf import ffi, lib
from ..errors import BadArgumentError
from ..eventbuf import Callback, Decoder, _np, deliver_run, deliver_views
from ..ringbuf.records import _CHUNK, _Bytes, _Padded, _plain, word64

if TYPE_CHECKING:
    import numpy

__all__ = ["PerfReader", "SAMPLE_HEADER", "HEAD_OFFSET", "TAIL_OFFSET"]

PAGE_SIZE = mmap.PAGESIZE
HEAD_OFFSET = ffi.offsetof("struct perf_event_mmap_page", "data_head")
TAIL_OFFSET = ffi.offsetof("struct perf_event_mmap_page", "data_tail")
RECORD_HEADER = ffi.sizeof("struct perf_event_header")
# A PERF_SAMPLE_RAW sample: the record header, the u32 raw size, the raw bytes
# (the producer's, zero-padded by the kernel so the record stays 8-aligned).
SAMPLE_HEADER = RECORD_HEADER + 4
SAMPLE = lib.PERF_RECORD_SAMPLE
LOST = lib.PERF_RECORD_LOST
# A record header as one u64: type (bits 0-31), misc (32-47), size (48-63).
# misc holds the CPU mode of the sample, which may change between samples;
# runs of records compare type and size only.
_NO_MISC = 0xFFFF_0000_FFFF_FFFF
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

# Below this many records a vectorised header scan costs more than it saves.
_MIN_RUN = 8


class PerfReader:
    """The parsing core of a perf-buffer consumer, on any buffers.

    ``rings``: one writable buffer per CPU, each laid out like a perf
    event's mapping: the header page (``data_head`` at :data:`HEAD_OFFSET`,
    ``data_tail`` at :data:`TAIL_OFFSET`) and ``data_size`` bytes of data (a
    power of two) from ``data_offset``.  Records are 8-byte aligned and may
    wrap around the end of the data area; such a record is reassembled.

    Counters: ``delivered`` (samples handed to the caller), ``lost`` (samples
    the kernel dropped because a ring was full, from its PERF_RECORD_LOST
    records), ``discarded`` (always 0: perf samples cannot be discarded) and
    ``other`` (records of other types, skipped).

    ``fence``: None where plain loads and stores are ordered enough (x86-64),
    else a full memory barrier (a callable) that the reader issues after
    reading a ring's ``data_head`` (acquire: the kernel writes the records,
    then ``smp_wmb()``, then ``data_head``) and before storing its
    ``data_tail`` (release: every read of the records it frees is done) --
    the order include/uapi/linux/perf_event.h asks of user space.

    Not thread-safe: one caller at a time (:class:`PerfBuffer` sees to it).
    Setting :attr:`stop` (from any thread) ends a read in progress after the
    run of records it is delivering, and every later read at once.
    """

    def __init__(self, rings: Sequence[Any], data_size: int, *,
                 data_offset: int = PAGE_SIZE, decoder: Optional[Decoder] = None,
                 layout: Any = None, dtype: Any = None,
                 fence: Optional[Callable[[], Any]] = None) -> None:
        if data_size <= 0 or data_size & (data_size - 1):
            raise BadArgumentError(f"perf ring size must be a power of two, got {data_size}")
        for r in rings:
            if len(memoryview(r)) < data_offset + data_size:
                raise BadArgumentError("a ring buffer is shorter than data_offset + data_size")
        self._rings: List[Any] = list(rings)
        # data_head / data_tail: single 8-byte loads and stores (see word64)
        self._heads = [word64(r, HEAD_OFFSET) for r in self._rings]
        self._tails = [word64(r, TAIL_OFFSET) for r in self._rings]
        self._arrs: List[Any] = [None] * len(self._rings)   # numpy views (first batch)
        self._base = data_offset
        self.size = data_size
        self._mask = data_size - 1
        self.layout = layout
        self._fast: Dict[int, Optional[Tuple[Any, Any]]] = {}
        self._decoder: Optional[Decoder] = None
        self.decoder = decoder if decoder is not None or layout is None else layout.decoder()
        self.dtype = dtype
        self._next = 0                 # the ring read first next time (fairness)
        self._fence = fence
        if fence is not None:
            self._head = self._head_acquire             # type: ignore[method-assign]
            self._set_tail = self._set_tail_release     # type: ignore[method-assign]
        self.delivered = 0
        self.lost = 0
        self.discarded = 0
        self.other = 0
        self.stop = False

    @property
    def decoder(self) -> Optional[Decoder]:
        """``decoder(buffer, offset) -> record``; None delivers ``bytes``."""
        return self._decoder

    @decoder.setter
    def decoder(self, dec: Optional[Decoder]) -> None:
        self._decoder = dec
        self._fast = {}

    def _detach(self) -> None:
        """Drop every view of the buffers (a numpy view pins an mmap open)."""
        self._arrs = [None] * len(self._arrs)
        for w in self._heads + self._tails:
            w.release()
        self._heads = []
        self._tails = []
        self._rings = []

    # -- positions ----------------------------------------------------------------
    # One 8-byte access each (word64): the kernel writes data_head while we
    # read it and reads data_tail while we store it.
    def _head(self, k: int) -> int:
        """Ring ``k``'s ``data_head``: where the kernel's records end."""
        return int(self._heads[k][0])

    def _set_tail(self, k: int, tail: int) -> None:
        """Give ring ``k``'s records before ``tail`` back to the kernel."""
        self._tails[k][0] = tail

    # With a fence (weakly ordered machines) these replace the two above.
    def _head_acquire(self, k: int) -> int:
        head = int(self._heads[k][0])
        self._fence()       # type: ignore[misc]
        return head

    def _set_tail_release(self, k: int, tail: int) -> None:
        self._fence()       # type: ignore[misc]
        self._tails[k][0] = tail

    def _count_other(self, ring: Any, pos: int, rtype: int, rsize: int) -> None:
        """A record that is not a sample: a LOST record's count of samples the
        kernel dropped goes to :attr:`lost`, anything else to :attr:`other`."""
        if rtype == LOST:
            self.lost += _U64.unpack_from(self._record(ring, pos, rsize), 16)[0]
        else:
            self.other += 1

    def pending_bytes(self) -> int:
        """Bytes written by the kernel and not yet consumed, on all rings."""
        return sum(h[0] - t[0] for h, t in zip(self._heads, self._tails))

    def _order(self) -> List[int]:
        """Ring indexes, starting after the one started with last time."""
        n = len(self._rings)
        start = self._next % n if n else 0
        self._next = start + 1
        return [(start + i) % n for i in range(n)]

    def _record(self, ring: Any, off: int, size: int) -> bytes:
        """The ``size`` bytes of the record at data offset ``off``, joined
        across the end of the data area."""
        base = self._base
        first = min(size, self.size - off)
        out = bytes(ring[base + off:base + off + first])
        if first < size:
            out += bytes(ring[base:base + size - first])
        return out

    def _fast_for(self, rsize: int) -> Optional[Tuple[Any, Any]]:
        """For a run of samples of ``rsize`` bytes (record size):
        ``(wrap, iter_unpack)`` such that ``wrap(iter_unpack(view))`` yields
        exactly what the decoder would for each sample of the run; None when
        only the decoder itself can."""
        try:
            return self._fast[rsize]
        except KeyError:
            pass
        fast: Optional[Tuple[Any, Any]] = None
        raw = rsize - SAMPLE_HEADER
        lay = self.layout
        if self._decoder is None:
            st = struct.Struct(f"<{SAMPLE_HEADER}x{raw}s")
            fast = (partial(map, itemgetter(0)), st.iter_unpack)
        elif (lay is not None and lay.size <= raw and _plain(lay)
              and self._decoder is lay.decoder()):
            fmt = lay.format
            st = struct.Struct(f"{fmt[0]}{SAMPLE_HEADER}x{fmt[1:]}{raw - lay.size}x")
            fast = (partial(map, lay.record_class()), st.iter_unpack)
        self._fast[rsize] = fast
        return fast

    def _one(self, raw: int) -> Any:
        """The decoder of one sample whose raw size is ``raw``."""
        dec = self._decoder
        if dec is None:
            return _Bytes(raw)
        if self.layout is not None and raw < self.layout.size:
            return _Padded(dec, raw, self.layout.size)
        return dec

    def _run_length(self, k: int, pos: int, hdr: int, count: int, rsize: int) -> int:
        """How many records from data offset ``pos`` (at most ``count``,
        contiguous) are samples of ``rsize`` bytes like the first."""
        if count < _MIN_RUN:
            return 1
        np = _np()
        h = np.ndarray((count,), "<u8", buffer=self._arr(k), offset=self._base + pos,
                       strides=(rsize,))
        if (h == np.uint64(hdr)).all():     # the common case: misc alike too
            return count
        same = (h & np.uint64(_NO_MISC)) == np.uint64(hdr & _NO_MISC)
        return count if same.all() else int(same.argmin())

    def _arr(self, k: int) -> Any:
        a = self._arrs[k]
        if a is None:
            np = _np()
            a = self._arrs[k] = np.frombuffer(self._rings[k], np.uint8)
        return a

    # -- per event -------------------------------------------------------------------
    def consume(self, cb: Callback, limit: Optional[int] = None) -> int:
        """Deliver every sample available now on every ring to ``cb`` (see
        :meth:`PerfBuffer.consume` for the callback's return rules)."""
        n = 0
        for k in self._order():
            if self.stop or (limit is not None and n >= limit):
                break
            got, stopped = self._consume_ring(k, cb, None if limit is None else limit - n)
            n += got
            if stopped:
                break
        return n

    def _consume_ring(self, k: int, cb: Callback, limit: Optional[int]) -> Tuple[int, bool]:
        ring = self._rings[k]
        base = self._base
        size = self.size
        mask = self._mask
        unpack_u64 = _U64.unpack_from
        get_head = self._head
        set_tail = self._set_tail
        count_box = [0]
        n = 0
        stop = False
        tail = int(self._tails[k][0])
        try:
            while (limit is None or n < limit) and not self.stop:
                head = get_head(k)
                if tail >= head:
                    break
                pos = tail & mask
                hdr = unpack_u64(ring, base + pos)[0]
                rtype = hdr & 0xFFFF_FFFF
                rsize = hdr >> 48
                if rsize < RECORD_HEADER:  # pragma: no cover - never written by the kernel
                    tail = head
                    break
                if rtype != SAMPLE:
                    self._count_other(ring, pos, rtype, rsize)
                    tail += rsize
                    continue
                fast = None
                start = 0
                if pos + rsize > size:
                    # A sample that wraps around the end: reassembled, decoded alone.
                    rec = self._record(ring, pos, rsize)
                    raw = _U32.unpack_from(rec, RECORD_HEADER)[0]
                    recs: Any = iter((self._one(raw)(rec, SAMPLE_HEADER),))
                    run = 1
                else:
                    count = min((head - tail) // rsize, (size - pos) // rsize)
                    if limit is not None:
                        count = min(count, limit - n)
                    run = self._run_length(k, pos, hdr, count, rsize)
                    start = base + pos
                    fast = self._fast_for(rsize) if run > 1 else None
                    if fast is None:
                        raw = _U32.unpack_from(ring, start + RECORD_HEADER)[0]
                        first = start + SAMPLE_HEADER
                        recs = map(self._one(raw), repeat(ring, run),
                                   range(first, first + run * rsize, rsize))
                    else:
                        recs = None     # the whole run decoded by struct's iter_unpack
                try:
                    stop = deliver_run(cb, recs, count_box, ring, (start, start + run * rsize), fast)
                finally:
                    # The sample being delivered when the callback raised counts
                    # as consumed: the exception propagates with the tail past it.
                    done = count_box[0]
                    tail += done * rsize
                    n += done
                if stop:
                    break
                set_tail(k, tail)
        finally:
            set_tail(k, tail)
            self.delivered += n
        return n, stop

    # -- batches -------------------------------------------------------------------------
    def _chunks(self, k: int, dt: Any, max_records: Optional[int], copy: bool = True
                ) -> Generator[Tuple[Any, int], None, None]:
        """The samples available now on ring ``k`` as ``(rows, tail)``:
        ``rows`` an array of ``dt`` (None for a last item with no rows),
        ``tail`` the position just past them; the caller stores the tail.

        A contiguous run of samples of one size whose raw data holds a row
        is checked with one vectorised pass over the headers and becomes one
        array: a copy (``copy``) or a read-only view into the ring; other
        samples (shorter, or wrapping around the end) are copied one by one
        (what fits in the dtype, zero-filled)."""
        np = _np()
        itemsize = dt.itemsize
        ring = self._rings[k]
        arr = self._arr(k)
        base = self._base
        size = self.size
        mask = self._mask
        unpack_u64 = _U64.unpack_from
        get_head = self._head
        odd = bytearray()
        nodd = 0
        total = 0
        tail = int(self._tails[k][0])
        while (max_records is None or total < max_records) and not self.stop:
            head = get_head(k)
            if tail >= head:
                break
            pos = tail & mask
            hdr = unpack_u64(ring, base + pos)[0]
            rtype = hdr & 0xFFFF_FFFF
            rsize = hdr >> 48
            if rsize < RECORD_HEADER:  # pragma: no cover - never written by the kernel
                tail = head
                break
            if rtype != SAMPLE:
                self._count_other(ring, pos, rtype, rsize)
                tail += rsize
                continue
            raw = rsize - SAMPLE_HEADER
            if pos + rsize <= size and raw >= itemsize:
                count = min((head - tail) // rsize, (size - pos) // rsize)
                if not copy:
                    count = min(count, max(2, _CHUNK // rsize))   # views: a piece at a time
                if max_records is not None:
                    count = min(count, max_records - total)
                run = self._run_length(k, pos, hdr, count, rsize) if count > 1 else 1
                if run > 1:
                    if nodd:
                        yield np.frombuffer(bytearray(odd), dt), tail
                        odd.clear()
                        nodd = 0
                    start = base + pos
                    if copy:
                        rows = self._copy_rows(arr, start, run, rsize, dt)
                    else:
                        rows = np.ndarray((run,), dt, buffer=arr, offset=start + SAMPLE_HEADER,
                                          strides=(rsize,))
                        rows.flags.writeable = False
                    tail += run * rsize
                    total += run
                    yield rows, tail
                    continue
            # One sample: copied alone (reassembled if it wraps).
            rec = self._record(ring, pos, rsize)
            raw = _U32.unpack_from(rec, RECORD_HEADER)[0]
            take = min(raw, itemsize)
            odd += rec[SAMPLE_HEADER:SAMPLE_HEADER + take]
            if take < itemsize:
                odd += bytes(itemsize - take)
            nodd += 1
            total += 1
            tail += rsize
        yield (np.frombuffer(odd, dt) if nodd else None), tail

    @staticmethod
    def _copy_rows(arr: Any, start: int, run: int, rsize: int, dt: Any) -> Any:
        """Copy ``run`` samples of ``rsize`` bytes from ``start`` (their
        records) into rows of ``dt``.  Rows of 24 bytes or more: one
        contiguous copy of the records, viewed as rows ``rsize`` apart (a
        memcpy beats a strided gather); smaller rows: a gather into packed
        rows.  Both are copies: the kernel reuses the ring."""
        np = _np()
        if dt.itemsize >= 24:
            buf = arr[start:start + run * rsize].copy()
            return np.ndarray((run,), dt, buffer=buf, offset=SAMPLE_HEADER, strides=(rsize,))
        src = np.ndarray((run,), dt, buffer=arr, offset=start + SAMPLE_HEADER, strides=(rsize,))
        return src.copy()

    def _linear(self, k: int, dt: Any, max_records: Optional[int]) -> Any:
        """The fast batch path: when everything pending on ring ``k`` (or the
        first ``max_records``) is samples of one size holding a row, one copy
        of their records in ring order (the part before the end of the ring,
        then the part from its start: a wrapped record is joined by the two
        copies) viewed as rows; the tail moves past them.  None when the
        ring holds anything else (the general path then reads it)."""
        np = _np()
        ring = self._rings[k]
        tail = int(self._tails[k][0])
        head = self._head(k)
        pos = tail & self._mask
        hdr = _U64.unpack_from(ring, self._base + pos)[0]
        rsize = hdr >> 48
        if (hdr & 0xFFFF_FFFF) != SAMPLE or rsize - SAMPLE_HEADER < dt.itemsize:
            return None
        count = (head - tail) // rsize
        if max_records is not None:
            count = min(count, max_records)
        if count < _MIN_RUN:
            return None
        nbytes = count * rsize
        arr = self._arr(k)
        base = self._base
        size = self.size
        buf = np.empty(nbytes, np.uint8)
        # Copied and checked a piece at a time, the check reading the copy
        # while it is cached (no record here can still be in the writing:
        # data_head is published after the records it covers).
        want = np.uint64(hdr)
        step = max(1, _CHUNK // rsize) * rsize
        alike = True                      # every header equal to the first, misc too
        for a in range(0, nbytes, step):
            b = min(a + step, nbytes)
            lo, hi = pos + a, pos + b     # ring offsets, maybe past the end
            if hi <= size:
                buf[a:b] = arr[base + lo:base + hi]
            elif lo >= size:
                buf[a:b] = arr[base + lo - size:base + hi - size]
            else:                         # the piece wraps around the end of the ring
                m = size - lo
                buf[a:a + m] = arr[base + lo:base + size]
                buf[a + m:b] = arr[base:base + hi - size]
            if alike:
                alike = bool((np.ndarray(((b - a) // rsize,), "<u8", buffer=buf, offset=a,
                                         strides=(rsize,)) == want).all())
        if not alike:                     # misc may differ: compare type and size only
            h = np.ndarray((count,), "<u8", buffer=buf, strides=(rsize,)) & np.uint64(_NO_MISC)
            if not (h == np.uint64(hdr & _NO_MISC)).all():
                return None
        self._set_tail(k, tail + nbytes)
        self.delivered += count
        return np.ndarray((count,), dt, buffer=buf, offset=SAMPLE_HEADER, strides=(rsize,))

    def read_batch(self, max_records: Optional[int] = None, dtype: Any = None) -> "numpy.ndarray":
        """Every sample available now (at most ``max_records``) as a numpy
        structured array of ``dtype`` (default: the reader's), copied out of
        the rings, ring by ring."""
        np = _np()
        if dtype is None and self.dtype is None:
            raise BadArgumentError("no record dtype: pass dtype= (or give the reader one)")
        dt = np.dtype(dtype if dtype is not None else self.dtype)
        if max_records is not None and max_records < 0:
            raise BadArgumentError("max_records must be >= 0")
        chunks: List[Any] = []
        total = 0
        for k in self._order():
            if self.stop or (max_records is not None and total >= max_records):
                break
            left = None if max_records is None else max_records - total
            fast = self._linear(k, dt, left)
            if fast is not None:
                chunks.append(fast)
                total += len(fast)
                if left is not None and len(fast) >= left:
                    break
            tail = None
            try:
                for rows, tail in self._chunks(k, dt, None if max_records is None
                                               else max_records - total):
                    if rows is not None:
                        chunks.append(rows)
                        total += len(rows)
                        self.delivered += len(rows)
            finally:
                if tail is not None:
                    self._set_tail(k, tail)
        if not chunks:
            return np.empty(0, dt)
        if len(chunks) == 1:
            return chunks[0]
        return np.concatenate(chunks)

    def consume_views(self, callback: Any, max_records: Optional[int] = None,
                      dtype: Any = None) -> int:
        """Zero-copy batches: ``callback(rows)`` for each run of samples
        available now, ``rows`` a read-only numpy view into a ring (a
        sample that wraps around the end comes alone, copied); the tail
        moves past them when the callback returns (or raises).  See
        :meth:`EventBuffer.consume_views <pytracers.eventbuf.EventBuffer.consume_views>`."""
        np = _np()
        if dtype is None and self.dtype is None:
            raise BadArgumentError("no record dtype: pass dtype= (or give the reader one)")
        dt = np.dtype(dtype if dtype is not None else self.dtype)
        n = 0
        for k in self._order():
            if self.stop or (max_records is not None and n >= max_records):
                break

            def commit(tail: int, m: int, k: int = k) -> None:
                self._set_tail(k, tail)
                self.delivered += m
            got, stop = deliver_views(
                callback, self._chunks(k, dt, None if max_records is None else max_records - n,
                                       False),
                partial(self._arr, k), commit)
            n += got
            if stop:
                break
        return n
