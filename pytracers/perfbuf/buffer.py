"""PerfBuffer: one perf event per CPU, its mapping, and the map's entries.

The parsing is :class:`~pytracers.perfbuf.PerfReader`'s (``records.py``);
the reading API, the waiting, the threads and the lifetime are
:class:`~pytracers.eventbuf.EventBuffer`'s, shared with the ring-buffer
reader; this module opens the per-CPU perf events, maps their rings, points
the map's entries at them and makes the epoll fd -- the contract is stated
in :mod:`pytracers.perfbuf`.
"""
from __future__ import annotations

import errno as _errno
import fcntl
import mmap
import os
import select
from functools import partial
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

from .. import _libbpf
from .._libbpf import ffi, lib, libc
from ..errors import (BadArgumentError, BadTypeError, MapError, NotSupportedError,
                      PermissionDeniedError)
from ..eventbuf import Callback, Decoder, EventBuffer, check_latency, ring_fence, wake_pipe
from ..kernel.host import online_cpus
from ..perf import NR_PERF_EVENT_OPEN
from .records import PAGE_SIZE, PerfReader

if TYPE_CHECKING:
    from ..maps import Map

__all__ = ["PerfBuffer", "DEFAULT_PAGES"]

#: data pages per CPU when not given (256 KiB with 4 KiB pages)
DEFAULT_PAGES = 64


def _int_arg(name: str, v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise BadTypeError(f"{name} must be an int")
    return v


def _perf_event_open(cpu: int, wakeup_events: int, wakeup_bytes: Optional[int],
                     what: str) -> int:
    """A PERF_COUNT_SW_BPF_OUTPUT event on ``cpu`` (any process): the kernel
    end of one CPU's ring; its fd (close-on-exec)."""
    machine = os.uname().machine
    nr = NR_PERF_EVENT_OPEN.get(machine)     # the syscall's number differs per architecture
    if nr is None:
        raise NotSupportedError(what, f"pytracers does not know perf_event_open's number on "
                                f"{machine}")
    attr = ffi.new("struct perf_event_attr *")
    attr.type = lib.PERF_TYPE_SOFTWARE
    attr.size = ffi.sizeof("struct perf_event_attr")
    attr.config = lib.PERF_COUNT_SW_BPF_OUTPUT
    attr.sample_type = lib.PERF_SAMPLE_RAW
    attr.sample_period = 1
    if wakeup_bytes is not None:
        attr.flags = lib.PT_PERF_ATTR_WATERMARK
        attr.wakeup_events = wakeup_bytes       # the union's wakeup_watermark
    else:
        attr.wakeup_events = wakeup_events
    fd, err, _log = _libbpf.call_with_log(
        libc.syscall, ffi.cast("long", nr), attr,
        ffi.cast("long", -1), ffi.cast("long", cpu), ffi.cast("long", -1),
        ffi.cast("long", lib.PERF_FLAG_FD_CLOEXEC))
    if fd < 0:
        step = f"{what}: perf_event_open on CPU {cpu}"
        if err in (_errno.EACCES, _errno.EPERM):
            raise PermissionDeniedError(step, "CAP_PERFMON (or CAP_SYS_ADMIN)", errno=err,
                                        detail="or lower kernel.perf_event_paranoid")
        raise MapError(step, err or _errno.EINVAL)
    return int(fd)


def _release(reader: PerfReader, epoll: Any, rings: List[mmap.mmap], map_fd: int,
             entries: List[int], fds: List[int]) -> None:
    reader._detach()
    key = ffi.new("__u32 *")
    for cpu in entries:   # the map's references keep the events alive: drop them
        key[0] = cpu
        try:
            _libbpf.checked(lib.bpf_map_delete_elem, map_fd, key, what="remove a perf event "
                            "from its map", error=MapError, expected=(_errno.ENOENT,))
        except MapError:  # pragma: no cover - a close must not fail: nothing left to undo
            pass
    for thing in [epoll, *rings]:
        try:
            thing.close()
        except Exception:  # pragma: no cover - a view still held elsewhere pins the mapping
            pass
    for fd in fds:
        os.close(fd)


class PerfBuffer(EventBuffer):
    """A consumer of one ``BPF_MAP_TYPE_PERF_EVENT_ARRAY`` map: what
    ``bpf_perf_event_output()`` writes, CPU by CPU.

    Opening one opens a perf event (``PERF_COUNT_SW_BPF_OUTPUT``) on every
    online CPU the map has an entry for, maps ``pages`` data pages (a power
    of two) of each, and stores each event's fd at its CPU's index in the
    map, as libbpf's ``perf_buffer__new`` does; closing removes the entries
    again.  ``decoder``, ``event``, ``callback``, ``latency`` and ``dtype``
    are :class:`~pytracers.ringbuf.RingBuffer`'s: with
    ``event="struct_name"`` samples are decoded through that struct's BTF
    layout, the same decoders as ring records; otherwise a sample is its
    raw ``bytes``, including the kernel's padding to 8-byte alignment, whose
    content is not defined (see :mod:`pytracers.perfbuf`).

    Wakeups: by default the kernel wakes the reader at every sample
    (``wakeup_events=1``, libbpf's choice); ``wakeup_events=N`` wakes it
    every N samples per CPU, ``wakeup_bytes=B`` once B bytes are pending on
    a CPU (the watermark).  Either way a blocking read looks again after
    ``latency`` seconds, so a trickle below the threshold is still
    delivered.

    :attr:`lost` counts the samples the kernel dropped because a CPU's ring
    was full, exactly, from its PERF_RECORD_LOST records: once every sample
    has been read, ``delivered + lost`` is what the programs tried to write.
    """

    _what = "perf buffer"

    def __init__(self, m: "Map", *, decoder: Optional[Decoder] = None,
                 event: Any = None,
                 callback: Optional[Callback] = None,
                 latency: float = 0.1, dtype: Any = None, pages: int = DEFAULT_PAGES,
                 wakeup_events: Optional[int] = None,
                 wakeup_bytes: Optional[int] = None) -> None:
        fence = ring_fence()       # None on x86-64; libatomic's barrier elsewhere
        self.latency = check_latency(latency)
        pages = _int_arg("pages", pages)
        if pages < 1 or pages & (pages - 1):
            raise BadArgumentError(f"pages must be a power of two (pages per CPU), got {pages}")
        size = pages * PAGE_SIZE
        if wakeup_events is not None and wakeup_bytes is not None:
            raise BadArgumentError("pass wakeup_events= or wakeup_bytes=, not both")
        if wakeup_bytes is not None:
            wakeup_bytes = _int_arg("wakeup_bytes", wakeup_bytes)
            if not 0 < wakeup_bytes < size:
                raise BadArgumentError(f"wakeup_bytes must be between 1 and the ring's size "
                                       f"less one ({size - 1} bytes), got {wakeup_bytes}")
        events = 1 if wakeup_events is None else _int_arg("wakeup_events", wakeup_events)
        if not 0 < events < 1 << 32:
            raise BadArgumentError(f"wakeup_events must be a positive number of samples, "
                                   f"got {events}")
        self.map = m                  # keeps the object alive
        self.event = event
        self.callback = callback
        self.pages = pages
        self.size = size
        self.wakeup_events = None if wakeup_bytes is not None else events
        self.wakeup_bytes = wakeup_bytes
        self._dtype_arg = dtype
        # the event's layout, as for rings (see pytracers.btf.foreign)
        from ..eventbuf import event_layout_of
        layout = event_layout_of(m.object.btf, event)
        what = f"open perf buffer on map {m.name!r}"
        self.cpus: Tuple[int, ...] = tuple(c for c in online_cpus() if c < m.max_entries)
        if not self.cpus:
            raise BadArgumentError(f"map {m.name} has {m.max_entries} entries: no online CPU "
                                   "has one")
        fds = [os.dup(m.fd)]
        map_fd = fds[0]
        rings: List[mmap.mmap] = []
        entries: List[int] = []
        ep = None
        try:
            wake_r, wake_w = wake_pipe()
            fds += [wake_r, wake_w]
            ep = select.epoll()
            ep.register(wake_r, select.EPOLLIN)
            key = ffi.new("__u32 *")
            val = ffi.new("__u32 *")
            for cpu in self.cpus:
                pfd = _perf_event_open(cpu, events, wakeup_bytes, what)
                fds.append(pfd)
                try:
                    rings.append(mmap.mmap(pfd, PAGE_SIZE + size, mmap.MAP_SHARED,
                                           mmap.PROT_READ | mmap.PROT_WRITE))
                except OSError as e:
                    raise MapError(f"{what}: map {pages} pages of CPU {cpu}'s ring",
                                   e.errno or _errno.ENOMEM,
                                   "kernel.perf_event_mlock_kb limits what a process without "
                                   "CAP_IPC_LOCK may map") from None
                try:
                    fcntl.ioctl(pfd, lib.PERF_EVENT_IOC_ENABLE, 0)
                except OSError as e:  # pragma: no cover - an event we just opened
                    raise MapError(f"{what}: enable CPU {cpu}'s perf event",
                                   e.errno or _errno.EINVAL) from None
                key[0], val[0] = cpu, pfd
                _libbpf.checked(lib.bpf_map_update_elem, map_fd, key, val, 0,
                                what=f"{what}: set CPU {cpu}'s entry", error=MapError)
                entries.append(cpu)
                ep.register(pfd, select.EPOLLIN)
        except BaseException:
            reader = PerfReader([], size)
            _release(reader, ep if ep is not None else _Nothing(), rings, map_fd, entries, fds)
            raise
        reader = PerfReader(rings, size, decoder=decoder, layout=layout, fence=fence)
        self._start(reader, ep, wake_w, partial(_release, reader, ep, rings, map_fd,
                                                entries, fds))

    @property
    def lost(self) -> int:
        """Samples the kernel dropped because a CPU's ring was full (from
        its lost-sample records, which it writes before the next sample it
        can fit on that CPU)."""
        return int(self._reader.lost)

    def __repr__(self) -> str:
        return (f"<PerfBuffer {self.map.name} {len(self.cpus)} CPUs x {self.pages} pages"
                f"{' closed' if self.closed else ''}>")


class _Nothing:
    def close(self) -> None:
        pass
