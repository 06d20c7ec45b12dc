"""The parsing core of the ring-buffer reader: records out of any buffers
laid out like the kernel's ring (see :mod:`pytracers.ringbuf` for the layout
and the two ways to read).

:class:`RingReader` keeps no state of its own besides its counters: the
consumer position lives in the consumer page, as in the kernel.  It takes no
lock -- it is the single-threaded core; :class:`~pytracers.ringbuf.RingBuffer`
serialises the threads that read a real ring and keeps its mapping alive
while one of them is inside.
"""
from __future__ import annotations

import mmap
import struct
import sys
from functools import partial
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Callable, Dict, Generator, List, Optional, Tuple

from ..errors import BadArgumentError
from ..eventbuf import deliver_run, deliver_views

if TYPE_CHECKING:
    import numpy

__all__ = ["RingReader", "BUSY_BIT", "DISCARD_BIT", "HEADER_SIZE"]

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
LEN_MASK = DISCARD_BIT - 1
HEADER_SIZE = 8
PAGE_SIZE = mmap.PAGESIZE
_U32 = struct.Struct("<I")


def word64(buf: Any, offset: int = 0) -> memoryview:
    """The 8 bytes of ``buf`` at ``offset`` (8-aligned) as a one-item native
    ``Q`` memoryview: ``w[0]`` reads and ``w[0] = x`` stores them with a
    single 8-byte access (memoryview copies a ``Q`` item with a fixed-size
    memcpy, one load or store on x86-64 and arm64).

    A position the kernel reads while we write it (the ring buffer's
    consumer position, a perf ring's ``data_tail``) and one it writes while
    we read it (the producer position, ``data_head``) must be accessed this
    way: ``struct.pack_into`` zeroes the bytes first and then writes them one
    by one, so a producer on another CPU could see the consumer position at 0
    or half-written -- the ring looks full and the record is dropped (and
    counted lost); ``unpack_from`` reads them one by one and could see a torn
    producer position.  Release the view before closing the mapping."""
    return memoryview(buf).cast("B")[offset:offset + 8].cast("Q")

# Below this many records a vectorised header scan costs more than it saves.
_MIN_RUN = 8
# Batches go through long runs of records this many bytes at a time: the
# header check of a piece brings it into the cache (a core's L2 holds it)
# just before it is copied or handed to the callback.
_CHUNK = 1 << 21
# Until something has imported numpy, a run shorter than this is read record by
# record: importing numpy (tens of ms) would delay a CLI's first event more
# than the scan saves on a few hundred records.
_IMPORT_RUN = 4096

Decoder = Callable[[Any, int], Any]
Callback = Callable[[Any], Any]


def _np() -> Any:
    import numpy
    return numpy


def _stride(length: int) -> int:
    return (length + HEADER_SIZE + 7) & ~7


def _plain(layout: Any) -> bool:
    """Only fields that struct unpacks to their final value (numbers, raw bytes)."""
    for f in layout.fields:
        if f.kind == "bytes":
            continue
        if f.kind in ("int", "uint", "ptr", "bool") and f.size in (1, 2, 4, 8):
            continue
        if f.kind == "float" and f.size in (2, 4, 8):
            continue
        return False
    return True


class _Bytes:
    """The default decoder: a record's payload as ``bytes``.  One instance per
    run length, so a run is decoded by ``map()`` without a Python frame."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __call__(self, buf: Any, off: int) -> bytes:
        return bytes(buf[off:off + self.length])


class _Padded:
    """A decoder for records shorter than the layout (a producer that sends
    only the used part of a trailing buffer, with ``bpf_ringbuf_output``):
    the record's bytes, zero-filled to the layout's size, as the batch path
    does -- never the bytes that follow the record in the ring."""

    def __init__(self, dec: Decoder, length: int, size: int) -> None:
        self.dec = dec
        self.length = length
        self.zeros = bytes(size - length)

    def __call__(self, buf: Any, off: int) -> Any:
        return self.dec(bytes(buf[off:off + self.length]) + self.zeros, 0)


class _Sized:
    """A variable-length layout's decoder for records of ``length`` bytes."""

    def __init__(self, dec: Decoder, length: int) -> None:
        self.dec = dec
        self.length = length

    def __call__(self, buf: Any, off: int) -> Any:
        return self.dec(buf, off, self.length)   # type: ignore[call-arg]


class RingReader:
    """The parsing core of a ring-buffer consumer, on any buffers.

    ``consumer``: a writable buffer whose first 8 bytes are the consumer
    position; ``data``: a buffer with the producer position in its first 8
    bytes and the data area, ``size`` bytes mapped twice in a row, starting
    at ``data_offset`` (one page in the kernel's mapping).  The reader keeps
    no state of its own besides the ``delivered``/``discarded`` counters: the
    position lives in ``consumer``, as in the kernel.

    ``fence``: None where plain loads and stores are ordered enough (x86-64),
    else a full memory barrier (a callable) that the reader issues after
    reading the producer position (acquire), between reading a run's headers
    and its data (acquire of the headers), and before storing the consumer
    position (release); see the package's "Memory ordering".

    Not thread-safe: one caller at a time (:class:`RingBuffer` sees to it).
    Setting :attr:`stop` (from any thread) ends a read in progress after the
    run of records it is delivering, and every later read at once.
    """

    def __init__(self, consumer: Any, data: Any, size: int, *,
                 data_offset: int = PAGE_SIZE, decoder: Optional[Decoder] = None,
                 layout: Any = None, dtype: Any = None,
                 fence: Optional[Callable[[], Any]] = None) -> None:
        if size <= 0 or size & (size - 1):
            raise BadArgumentError(f"ring size must be a power of two, got {size}")
        if len(memoryview(data)) < data_offset + 2 * size:
            raise BadArgumentError("data buffer is shorter than data_offset + 2 * size")
        self._cons = consumer
        self._data = data
        self._cons_word = word64(consumer)     # single 8-byte loads and stores: see word64
        self._prod_word = word64(data)
        self._fence = fence
        if fence is not None:
            self.producer_pos = self._producer_pos_acquire        # type: ignore[method-assign]
            self._set_consumer_pos = self._set_consumer_pos_release  # type: ignore[method-assign]
        self._base = data_offset
        self.size = size
        self._mask = size - 1
        self.layout = layout           # pytracers.btf.StructLayout of the records, if known
        self._fast: Dict[int, Optional[Tuple[Any, Any]]] = {}
        self._decoder: Optional[Decoder] = None
        self.decoder = decoder if decoder is not None or layout is None else layout.decoder()
        self.dtype = dtype
        self._arr: Any = None          # numpy view of `data` (made on first batch)
        self.delivered = 0             # records handed to the caller
        self.discarded = 0             # records the producer discarded (skipped)
        self.stop = False              # set: deliver nothing more (the ring is closing)

    @property
    def decoder(self) -> Optional[Decoder]:
        """``decoder(buffer, offset) -> record``; None delivers ``bytes``."""
        return self._decoder

    @decoder.setter
    def decoder(self, dec: Optional[Decoder]) -> None:
        self._decoder = dec
        self._fast = {}

    def _fast_for(self, length: int) -> Optional[Tuple[Any, Any]]:
        """For a run of records of ``length`` bytes: ``(wrap, iter_unpack)``
        such that ``wrap(iter_unpack(view))`` yields exactly what the decoder
        would for each record of the run in ``view``; None when only the
        decoder itself can (custom decoders, layouts with strings or arrays)."""
        try:
            return self._fast[length]
        except KeyError:
            pass
        fast: Optional[Tuple[Any, Any]] = None
        pad = f"{_stride(length) - HEADER_SIZE - length}x"
        lay = self.layout
        if self._decoder is None:
            st = struct.Struct(f"<{HEADER_SIZE}x{length}s{pad}")
            fast = (partial(map, itemgetter(0)), st.iter_unpack)
        elif (lay is not None and length == lay.size and _plain(lay) and lay.tail is None
              and self._decoder is lay.decoder()):
            # btf's decoder of a plain layout is record_class()(unpack(...)).
            fmt = lay.format
            st = struct.Struct(f"{fmt[0]}{HEADER_SIZE}x{fmt[1:]}{pad}")
            fast = (partial(map, lay.record_class()), st.iter_unpack)
        self._fast[length] = fast
        return fast

    def _detach(self) -> None:
        """Drop every view of the buffers (a numpy view pins an mmap open)."""
        self._arr = None
        for w in (self._cons_word, self._prod_word):
            if w is not None:
                w.release()
        self._cons_word = self._prod_word = None   # type: ignore[assignment]
        self._cons = None
        self._data = None

    # -- positions ----------------------------------------------------------------
    # One 8-byte access each (word64): the kernel's producer reads the
    # consumer position while we store it, and writes the producer position
    # while we read it.
    def consumer_pos(self) -> int:
        return int(self._cons_word[0])

    def producer_pos(self) -> int:
        return int(self._prod_word[0])

    def _set_consumer_pos(self, pos: int) -> None:
        self._cons_word[0] = pos

    # With a fence (weakly ordered machines) these replace the two above:
    # the producer position is read before anything it covers (acquire), the
    # consumer position stored after every read of what it frees (release).
    def _producer_pos_acquire(self) -> int:
        pos = int(self._prod_word[0])
        self._fence()       # type: ignore[misc]
        return pos

    def _set_consumer_pos_release(self, pos: int) -> None:
        self._fence()       # type: ignore[misc]
        self._cons_word[0] = pos

    def pending_bytes(self) -> int:
        """Bytes written (or reserved) by the producer and not yet consumed."""
        return self.producer_pos() - self.consumer_pos()

    def _headers(self, off: int, count: int, stride: int) -> Any:
        """A copy of the u32 length words of ``count`` records ``stride`` apart."""
        np = _np()
        if self._arr is None:
            self._arr = np.frombuffer(self._data, np.uint8)
        return np.ndarray((count,), "<u4", buffer=self._arr, offset=off,
                          strides=(stride,)).copy()

    def _run_length(self, off: int, hdr: int, count: int, stride: int) -> int:
        """How many records from ``off`` (at most ``count``) have header ``hdr``
        exactly, up to the first that differs (busy, discarded, other length)."""
        if count < _MIN_RUN or (count < _IMPORT_RUN and "numpy" not in sys.modules):
            return 1
        h = self._headers(off, count, stride)
        same = h == hdr
        return count if same.all() else int(same.argmin())

    # -- per event -------------------------------------------------------------------
    def consume(self, cb: Callback, limit: Optional[int] = None) -> int:
        """Deliver every complete record available now to ``cb``; see
        :meth:`RingBuffer.consume` for the callback's return rules."""
        data = self._data
        base = self._base
        mask = self._mask
        dec = self.decoder
        unpack_u32 = _U32.unpack_from
        get_prod = self.producer_pos
        fence = self._fence
        n = 0
        count_box = [0]
        cons = self.consumer_pos()
        prod = cons                         # read the producer position when needed
        try:
            while (limit is None or n < limit) and not self.stop:
                if cons >= prod:            # what it covered is read: look again
                    prod = get_prod()
                    if cons >= prod:
                        break
                off = base + (cons & mask)
                hdr = unpack_u32(data, off)[0]
                if hdr & BUSY_BIT:
                    break                   # the producer is still writing this one
                length = hdr & LEN_MASK
                stride = _stride(length)
                if hdr & DISCARD_BIT:
                    cons += stride
                    self.discarded += 1
                    continue
                count = (prod - cons) // stride
                if limit is not None:
                    count = min(count, limit - n)
                run = self._run_length(off, hdr, count, stride)
                if fence is not None:
                    fence()                 # the headers read before the data they cover
                start = off + HEADER_SIZE
                fast = self._fast_for(length) if run > 1 else None
                if fast is None:
                    if dec is None:
                        one: Any = _Bytes(length)
                    elif self.layout is not None and length < self.layout.size:
                        one = _Padded(dec, length, self.layout.size)
                    elif self.layout is not None and self.layout.tail is not None \
                            and dec is self.layout.decoder():
                        one = _Sized(dec, length)     # variable-length: the tail's bytes
                    else:
                        one = dec
                    recs = map(one, repeat(data, run), range(start, start + run * stride, stride))
                else:
                    recs = None     # the whole run decoded by struct's iter_unpack
                try:
                    stop = deliver_run(cb, recs, count_box, data, (off, off + run * stride), fast)
                finally:
                    # The record being delivered when the callback raised counts
                    # as consumed: the exception propagates with the position
                    # past it, so the next read does not deliver it again.
                    done = count_box[0]
                    cons += done * stride
                    n += done
                if stop:
                    break
                self._set_consumer_pos(cons)
        finally:
            self._set_consumer_pos(cons)
            self.delivered += n
        return n

    # -- batches -------------------------------------------------------------------------
    def _dtype(self, dtype: Any) -> Any:
        np = _np()
        dt = dtype if dtype is not None else self.dtype
        if dt is None:
            raise BadArgumentError("no record dtype: pass dtype= (or give the reader one)")
        return np.dtype(dt)

    def _chunks(self, dt: Any, max_records: Optional[int],
                copy: bool) -> Generator[Tuple[Any, int], None, None]:
        """The records available now, in ring order, as ``(rows, pos)``:
        ``rows`` an array of ``dt`` (None for the last item when it holds no
        rows) and ``pos`` the consumer position just past them.  The caller
        moves the consumer position: to ``pos`` of each item once done with
        its rows.  Discarded records skipped before ``pos`` are counted in
        :attr:`discarded` as the item is yielded.

        A run of records whose length is ``dt.itemsize`` is checked with
        vectorised passes over the headers and becomes one array: a copy out
        of the ring (``copy``) or read-only views into it, ``stride`` bytes
        per row.  The common case -- every header equal to the length:
        complete, not discarded -- goes :data:`_CHUNK` bytes at a time: the
        headers of a piece are checked, then the piece is copied (into one
        array for the whole run) or handed over as a view, while the
        check has just brought it into the cache; a second pass over the
        whole run would find it evicted.  Otherwise one snapshot of the
        run's headers finds where it ends (stop at the first BUSY record or
        one of another length) and masks out discarded records (a
        compacting copy).  Records of any other length are copied one by
        one (what fits in the dtype, zero-filled) and grouped into one array
        until the next run."""
        np = _np()
        itemsize = dt.itemsize
        if max_records is not None and max_records < 0:
            raise BadArgumentError("max_records must be >= 0")
        if self._arr is None:
            self._arr = np.frombuffer(self._data, np.uint8)
        arr = self._arr
        data = self._data
        base = self._base
        mask = self._mask
        unpack_u32 = _U32.unpack_from
        odd = bytearray()          # rows from the per-record path, waiting to become a chunk
        nodd = 0
        total = 0
        discarded = 0
        fence = self._fence
        cons = self.consumer_pos()
        prod = cons
        while (max_records is None or total < max_records) and not self.stop:
            if cons >= prod:
                prod = self.producer_pos()
                if cons >= prod:
                    break
            off = base + (cons & mask)
            hdr = unpack_u32(data, off)[0]
            if hdr & BUSY_BIT:
                break
            length = hdr & LEN_MASK
            stride = _stride(length)
            count = (prod - cons) // stride
            if max_records is not None:
                count = min(count, max_records - total)
            if length == itemsize and count >= 2:
                if not copy or length >= 24:
                    # The common case, a piece at a time (see above).
                    per = max(2, _CHUNK // stride)
                    good = 0
                    dst = None
                    while good < count and not self.stop:
                        c = min(per, count - good)
                        o = off + good * stride
                        if not (np.ndarray((c,), "<u4", buffer=arr, offset=o,
                                           strides=(stride,)) == length).all():
                            break
                        if fence is not None:
                            fence()          # the headers read before the data they cover
                        if nodd:
                            self.discarded += discarded
                            discarded = 0
                            yield np.frombuffer(bytearray(odd), dt), cons
                            odd.clear()
                            nodd = 0
                        if copy:
                            if dst is None:
                                dst = np.empty(count * stride, np.uint8)
                            dst[good * stride:(good + c) * stride] = arr[o:o + c * stride]
                            good += c
                        else:
                            rows = np.ndarray((c,), dt, buffer=arr, offset=o + HEADER_SIZE,
                                              strides=(stride,))
                            rows.flags.writeable = False
                            good += c
                            total += c
                            self.discarded += discarded
                            discarded = 0
                            yield rows, cons + good * stride
                            del rows
                    if good:
                        cons += good * stride
                        if copy:
                            total += good
                            self.discarded += discarded
                            discarded = 0
                            yield np.ndarray((good,), dt, buffer=dst, offset=HEADER_SIZE,
                                             strides=(stride,)), cons
                        continue
                    # the first piece is not all alike: the detailed scan below
                elif (np.ndarray((count,), "<u4", buffer=arr, offset=off,
                                 strides=(stride,)) == length).all():
                    # Small records, all alike: one check, then one gather into
                    # packed rows (see _copy_rows).
                    if fence is not None:
                        fence()
                    if nodd:
                        self.discarded += discarded
                        discarded = 0
                        yield np.frombuffer(bytearray(odd), dt), cons
                        odd.clear()
                        nodd = 0
                    rows = self._copy_rows(arr, off + HEADER_SIZE, count, stride, length, dt)
                    cons += count * stride
                    total += count
                    self.discarded += discarded
                    discarded = 0
                    yield rows, cons
                    del rows
                    continue
                h = np.ndarray((count,), "<u4", buffer=arr, offset=off,
                               strides=(stride,)).copy()       # one snapshot
                ok = (h & np.uint32(~DISCARD_BIT & 0xFFFFFFFF)) == length
                run = count if ok.all() else int(ok.argmin())
                keep = (h[:run] & np.uint32(DISCARD_BIT)) == 0
                if fence is not None:
                    fence()                  # the headers read before the data they cover
                if run:
                    if nodd:
                        self.discarded += discarded
                        discarded = 0
                        yield np.frombuffer(bytearray(odd), dt), cons
                        odd.clear()
                        nodd = 0
                    if copy:
                        rows = self._copy_rows(arr, off + HEADER_SIZE, run, stride, length, dt)
                    else:
                        rows = np.ndarray((run,), dt, buffer=arr, offset=off + HEADER_SIZE,
                                          strides=(stride,))
                        rows.flags.writeable = False
                    if not keep.all():
                        rows = rows[keep]
                        discarded += run - len(rows)
                    cons += run * stride
                    total += len(rows)
                    self.discarded += discarded
                    discarded = 0
                    yield rows, cons
                    del rows
                    continue
                # run == 0: this record is not fixed-size after all -- fall through
            # Slow path: one record.
            if fence is not None:
                fence()
            if hdr & DISCARD_BIT:
                discarded += 1
            else:
                start = off + HEADER_SIZE
                take = min(length, itemsize)
                odd += data[start:start + take]
                if take < itemsize:
                    odd += bytes(itemsize - take)
                nodd += 1
                total += 1
            cons += stride
        self.discarded += discarded
        yield (np.frombuffer(odd, dt) if nodd else None), cons

    def read_batch(self, max_records: Optional[int] = None, dtype: Any = None) -> "numpy.ndarray":
        """Every complete record available now (at most ``max_records``) as a
        numpy structured array of ``dtype`` (default: the reader's), copied
        out of the ring."""
        np = _np()
        dt = self._dtype(dtype)
        chunks: List[Any] = []
        pos = None
        try:
            for rows, pos in self._chunks(dt, max_records, True):
                if rows is not None:
                    chunks.append(rows)
                    self.delivered += len(rows)
        finally:
            if pos is not None:
                self._set_consumer_pos(pos)
        if not chunks:
            return np.empty(0, dt)
        if len(chunks) == 1:
            return chunks[0]
        return np.concatenate(chunks)

    def consume_views(self, callback: Callable[[Any], Any], max_records: Optional[int] = None,
                      dtype: Any = None) -> int:
        """Zero-copy batches: ``callback(rows)`` for each run of records
        available now (runs longer than :data:`_CHUNK` bytes come in pieces),
        ``rows`` a read-only numpy view into the ring; the consumer position
        moves past them when the callback returns (or raises).  See
        :meth:`RingBuffer.consume_views`."""
        dt = self._dtype(dtype)
        return deliver_views(callback, self._chunks(dt, max_records, False),
                             self._mapping, self._commit)[0]

    def _mapping(self) -> Any:
        return self._arr

    def _commit(self, pos: int, k: int) -> None:
        self._set_consumer_pos(pos)
        self.delivered += k

    @staticmethod
    def _copy_rows(arr: Any, start: int, run: int, stride: int, length: int, dt: Any) -> Any:
        """Copy ``run`` payloads of ``length`` bytes, ``stride`` apart from
        ``start``, out of the ring into rows of dtype ``dt``.

        Records of 24 bytes or more: one contiguous copy of the whole run,
        headers included, viewed as rows ``stride`` bytes apart (a memcpy is
        faster than a strided gather, and the 8-byte headers cost at most a
        quarter more memory).  Smaller records: a strided gather into packed
        rows, so 8-byte records do not take twice their size.  Both are
        copies: a view into the ring would be overwritten by the producer."""
        np = _np()
        if length >= 24:
            base = start - HEADER_SIZE
            buf = arr[base:base + run * stride].copy()
            return np.ndarray((run,), dt, buffer=buf, offset=HEADER_SIZE, strides=(stride,))
        for unit, code in ((8, "<u8"), (4, "<u4"), (1, "u1")):
            if length % unit == 0 and start % unit == 0:
                break
        src = np.ndarray((run, length // unit), code, buffer=arr, offset=start,
                         strides=(stride, unit))
        # .copy(), not ascontiguousarray(): a one-row view counts as contiguous
        # and would come back uncopied, still pointing into the ring.
        return src.copy().view(dt).reshape(run)
