"""Reading BPF perf buffers (BPF_MAP_TYPE_PERF_EVENT_ARRAY) from Python.

Before ring buffers (Linux 5.8), BPF programs sent events to user space with
``bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e))``:
a sample in a per-CPU ring of a ``PERF_COUNT_SW_BPF_OUTPUT`` perf event
whose fd user space stores in the map at that CPU's index.  Many tools
still do.  :class:`PerfBuffer` is the consumer (``Object.perf_buffer()``,
or ``Object.output()``, which picks the ring or perf reader by the map's
type); it has the :class:`~pytracers.ringbuf.RingBuffer`'s surface and
contract: ``consume``, ``poll``, ``read``, ``events``, ``read_batch``,
``iter_batches``, ``async for`` (:mod:`pytracers.aio`), records decoded
from the object's BTF with ``event=``, close() safe twice, ``with``, a
finalizer.

As for rings, pytracers maps the per-CPU rings and parses them in Python,
not through libbpf's ``perf_buffer__poll`` and its C-to-Python callback per
sample.

Layout (include/uapi/linux/perf_event.h): each CPU's mapping is one header
page (``struct perf_event_mmap_page``: ``data_head``, written by the kernel,
and ``data_tail``, ours) and a power-of-two number of data pages.  Records
are 8-byte aligned and start with ``struct perf_event_header`` (u32 type, u16
misc, u16 size).  A sample (PERF_RECORD_SAMPLE, with PERF_SAMPLE_RAW only)
is that header, a u32 raw size and the raw bytes, which the kernel pads to
keep the record 8-aligned: a 64-byte struct arrives as 68 raw bytes
(libbpf's callback gets the same 68), and the padding holds whatever the
ring held there before -- the kernel does not record the size the program
passed, so a sample read as ``bytes`` is the padded size and a decoder
reads only its struct's bytes.  The data area is mapped
once, so a record may wrap around its end: the reader joins the two parts
(only such a record is copied).  When a ring is full the kernel drops the
sample and counts it; once space frees up it writes a PERF_RECORD_LOST
record (u64 id, u64 lost) before the next sample on that CPU, and
:attr:`PerfBuffer.lost` adds them up -- exact, but known only when the next
sample on that CPU arrives.

Samples from one CPU arrive in order; there is no order across CPUs (each
read takes the CPUs in turn, starting with the next one each time).

Per event, a run of samples of one size is found with one vectorised scan
of their headers and decoded with ``struct.iter_unpack`` (plain layouts) or
the event's decoder, as for rings; a sample shorter than the event's layout
is zero-filled.  In batches (``read_batch``, ``iter_batches``), a run of
samples whose raw bytes hold a row of :attr:`~PerfBuffer.dtype` is copied by
numpy in one operation (rows may be strided; ``np.ascontiguousarray()``
packs them); the others are copied one by one, zero-filled.

Threads, close() and asyncio: exactly as for ring buffers (the contract is
stated once, in :mod:`pytracers.ringbuf`, and implemented once, in
:mod:`pytracers.eventbuf`): any number of threads and tasks may read, every
sample is delivered exactly once, reads are serialised one call at a time,
a read nested in a callback raises BusyError, and close() never waits for a
reader -- a blocked wait ends at once with ClosedError, and the rings are
unmapped, the map's entries removed and the fds closed when the last
reader leaves.

Memory ordering (the order include/uapi/linux/perf_event.h asks of a
reader): ``data_head`` is read before the records it covers (acquire: the
kernel writes the records, ``smp_wmb()``, then ``data_head``), and
``data_tail`` is stored after every read of the records it frees (release).
On x86-64 (TSO) plain loads and stores give that order; on arm64 (and any
other machine) the reader issues a full barrier (libatomic's
``atomic_thread_fence(memory_order_seq_cst)`` through cffi, as the ring
reader does) after each read of ``data_head`` and before each store of
``data_tail``: a fixed number per run of samples, on every path.  Without
libatomic the reader refuses to run.
"""
from __future__ import annotations

from .buffer import DEFAULT_PAGES, PerfBuffer
from .records import HEAD_OFFSET, SAMPLE_HEADER, TAIL_OFFSET, PerfReader

__all__ = ["PerfBuffer", "PerfReader", "DEFAULT_PAGES", "SAMPLE_HEADER", "HEAD_OFFSET",
           "TAIL_OFFSET"]
