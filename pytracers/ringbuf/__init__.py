"""Reading BPF ring buffers (BPF_MAP_TYPE_RINGBUF) from Python.

pytracers maps the ring itself instead of going through libbpf's
``ring_buffer__poll``: a C-to-Python callback per record costs about a
microsecond, while reading the shared mapping from Python costs only the
Python work per record, and lets the batch reader copy a run of fixed-size
records with numpy without touching each one in Python.

Layout (kernel/bpf/ringbuf.c): page 0 holds the consumer position (we write
it); the next page holds the producer position (read-only to us), followed by
the data area mapped twice in a row, so a record that wraps around the end is
still contiguous in our mapping -- and so is any run of records shorter than
the ring.  Each record starts with an 8-byte header: a u32 length with the
BUSY (still being written) and DISCARD bits, and a u32 page offset.  Records
are 8-byte aligned, so a run of records of one length is an array with a
fixed stride.

Two ways to read:

* per event -- :meth:`RingBuffer.consume`, :meth:`~RingBuffer.poll`,
  :meth:`~RingBuffer.read`, :meth:`~RingBuffer.events`: each record is decoded
  (``decoder(buffer, offset)``, built from BTF by ``Object.ring_buffer(event=...)``)
  and handed over one at a time.  A run of same-length records is found with
  one vectorised header scan, then decoded by ``map()`` over its offsets, so
  the per-record Python work is the decoder and the callback only.  A record
  shorter than the event's layout (a producer may send only the used part
  of a trailing buffer) is decoded from a zero-filled copy, as in batches.
* in batches -- :meth:`RingBuffer.read_batch`, :meth:`~RingBuffer.iter_batches`
  (and the zero-copy :meth:`~RingBuffer.consume_views`):
  records become rows of a numpy structured array whose dtype comes from the
  event's BTF (``StructLayout.numpy_dtype()``).  A run of fixed-size records
  is copied by numpy in one operation (a few ns per record), or with
  ``consume_views`` not copied at all: the callback gets a read-only view of
  the run in the ring, valid until it returns; a record of
  another length takes a slower per-record path that copies what fits in
  the dtype and zero-fills the rest.  Rows of records of 24 bytes or more
  keep the ring's 8-byte record headers between them (the array is strided:
  ``np.ascontiguousarray()`` packs it if needed).

Both stop at the first record still BUSY (the kernel consumer does the
same: records must be consumed in order), skip DISCARDed ones, and move the
consumer position only after the records before it have been copied out (or
the view's callback has returned).

numpy is a dependency of pytracers for this batch path alone: it is the only
way to turn a run of records in the mapping into typed columns without a
Python operation per record (the per-event path also uses it to find runs
of 8 records or more).  It is imported on first use, not with pytracers, so
start-up does not pay for it.

The parsing core, :class:`RingReader` (``ringbuf/records.py``), works on any
pair of buffers with the kernel's layout (tests drive it with a synthetic
ring to produce states a kernel producer cannot leave behind, such as a BUSY
record followed by complete ones); :class:`RingBuffer` (``ringbuf/buffer.py``)
adds the mapping of a real ring; waiting (epoll with a latency bound),
threads and lifetime are :class:`~pytracers.eventbuf.EventBuffer`'s, shared
with the perf-buffer reader (:mod:`pytracers.perfbuf`), which keeps the
contract below too.

Memory ordering
---------------
The kernel's producer reserves a record by moving the producer position
(a release store), writes it, then clears the BUSY bit of its header (a
release store); it reads the consumer position with acquire semantics before
reusing space.  The reader must therefore read the producer position before
the headers it covers, each header before the data it covers (acquire), and
finish reading a record before it stores the consumer position past it
(release) -- libbpf's ``ringbuf_process_ring`` does the same with
``smp_load_acquire``/``smp_store_release``.

* The positions themselves are read and stored with one 8-byte access each
  (``records.word64``): the kernel reads the consumer position while we store
  it, and ``struct.pack_into`` -- which zeroes the bytes first, then writes
  them one by one -- once let it see 0 and drop a record as if the ring were
  full.
* On x86-64 (TSO) loads are not reordered with other loads and stores are not
  reordered with earlier loads: plain loads and stores (memoryview, numpy)
  give that order, and the reader adds nothing.
* On arm64 (and any other machine) the reader issues a full barrier (``dmb
  ish``: libatomic's ``atomic_thread_fence(memory_order_seq_cst)`` called
  through cffi, no compiler involved) after reading the producer position,
  between reading a run's headers and its data, and before storing the
  consumer position.  A run of records is one set of barriers, whatever its
  length, on the per-event, batch and zero-copy paths alike (a zero-copy
  view is handed to the callback after the barrier, and the consumer position
  moves after the callback returns).  Without libatomic (``libatomic1``) the
  reader refuses to run rather than risk reading a record before its data.

Threads
-------
Any number of threads, and asyncio tasks, may read one :class:`RingBuffer`
(or one tracer) at once, and every record is delivered exactly once, to one
of them.  The reads are serialised: each call -- ``consume``, ``poll``,
``read``, ``read_batch``, ``consume_views``, each step of ``events`` and
``iter_batches``, each drain of the :mod:`pytracers.aio` readers -- holds
the ring's reader lock while it moves records out of the ring and runs its
callback, and lets it go before returning.  Waiting for records (epoll),
yielding to the caller and awaiting all happen without it.  So:

* two threads iterating one ring's ``events()`` share its records, none
  twice; each sees its share in ring order;
* one thread may interleave two iterators over one ring, and an iterator
  abandoned half-way (a ``break``, a generator kept but never resumed) holds
  nothing: the next reader goes on at once;
* the asyncio readers never wait for the lock on the event loop: while a
  thread is reading, they look again a moment later;
* a read called from inside a callback of a read of the same ring (same
  thread) raises :class:`~pytracers.errors.BusyError` at once: waiting would
  deadlock, and reading would deliver again the records the outer read is
  delivering.

Why serialise each call, rather than refuse a second reader: an
``events()`` generator is a reader for as long as it exists, not only while
it runs.  Refusing a second reader while the first exists would lock every
later reader out behind an abandoned generator until the collector finalises
it; holding a lock across ``yield`` would deadlock a thread that interleaves
two iterators; refusing only calls that overlap would make the error depend
on timing.  One call at a time has none of these failures and costs a few
lock operations per call, not per record.  (cilium/ebpf's ``ringbuf.Reader``
also serialises its reads with a mutex; pytracers does not hold the lock
while waiting, so each reader keeps its own timeout.)  What it cannot do:
records an iterator has taken from the ring but not yet yielded leave with
it when it is abandoned, exactly as with a single reader -- use ``poll`` or
``consume`` with a callback where every record must be handled.

``close()`` (of the ring, or of the object or tracer that owns it) may be
called from any thread, from a signal handler or from a read's own
callback, and never waits for a reader: a read waiting for records wakes at
once and raises :class:`~pytracers.errors.ClosedError`; a read delivering
records stops after the run it is delivering (a ``consume_views`` view
stays valid until its callback returns); every later read raises
ClosedError, and an ``events()`` loop that finds the ring closed between
two steps ends.  The ring is unmapped and its fds closed when the last
reader inside it leaves -- never under one.
"""
from __future__ import annotations

from .buffer import RingBuffer
# _MIN_RUN is not public: the parsing core's tuning, imported by the tests
from .records import _MIN_RUN, BUSY_BIT, DISCARD_BIT, HEADER_SIZE, RingReader  # noqa: F401

__all__ = ["RingBuffer", "RingReader", "BUSY_BIT", "DISCARD_BIT", "HEADER_SIZE"]
