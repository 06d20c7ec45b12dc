"""The sampling profiler: ``profile.bpf.o`` on a perf event on every CPU,
counts per (process, kernel stack, user stack) kept in the kernel, read and
symbolised once at the end."""
from __future__ import annotations

import os
import struct
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, TypeVar

from .. import object as _object
from .._shipped import object_path
from ..errors import BadArgumentError
from ..user.procfs import read_maps_text, start_time

if TYPE_CHECKING:   # imported where used: not before the perf events are open
    from ..symbolize import Frame, Symbolizer
    from .result import Profile, Sample

_Counter = TypeVar("_Counter", bound="StackCounter")

__all__ = ["Profiler", "profile", "read_stacks", "read_counts", "configure"]

# struct profile_key of profile.bpf.c: u32 pid, s32 kstack, s32 ustack, u32 pad, char comm[16]
KEY = struct.Struct("<IiiI16s")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
ST_NAMES = ("samples", "kstack_lost", "ustack_lost", "counts_full")
MID_EXEC_REREADS = 4   # times a process read without its executable mapped is announced again
MID_EXEC_RETRY_S = 0.01   # such a process's maps are also read again this often by the watcher...
MID_EXEC_WAIT_S = 2.0     # ...until its executable is mapped, for this long at most
MAPS_READS_KEPT = 32   # maps texts kept per process; past it, the newest replaces the last
EFAULT_STACK = -14   # bpf_get_stackid's -EFAULT: no stack of that kind (a kernel thread's user stack)


def _cgroup_id(path: str) -> int:
    """A cgroup v2 directory's id (its inode number, as bpf_get_current_cgroup_id gives)."""
    if not path.startswith("/"):
        path = os.path.join("/sys/fs/cgroup", path)
    return os.stat(path).st_ino


def configure(o: Any, *, pid: Optional[int], comm: Optional[str], cgroup: Optional[str],
              kernel: bool, user: bool, idle: Optional[bool] = None) -> None:
    if pid is not None:
        if not isinstance(pid, int) or pid <= 0:
            raise BadArgumentError(f"pid must be a positive int, got {pid!r}")
        o.config["cfg_pid"] = pid
    if comm:
        raw = comm.encode()[:15]
        o.config["cfg_comm"] = raw
    if cgroup:
        try:
            o.config["cfg_cgroup"] = _cgroup_id(cgroup)
        except OSError as e:
            raise BadArgumentError(f"cgroup {cgroup!r}: {e.strerror}") from None
    if not (kernel or user):
        raise BadArgumentError("profile at least one of the kernel and user stacks")
    o.config["cfg_kernel"] = int(kernel)
    o.config["cfg_user"] = int(user)
    if idle is not None:
        o.config["cfg_idle"] = int(idle)


def read_stacks(stack_map: Any, ids: set) -> Dict[int, List[int]]:
    """Stack id -> its addresses (innermost first, a list of ints) from a
    STACK_TRACE map (a zero address ends a stack)."""
    from ..symbolize import stack_addresses
    return {sid: stack_addresses(stack_map.lookup(struct.pack("<I", sid))) for sid in ids}


def symbolize_counts(entries: List[Tuple[int, str, int, int, int]],
                     stacks: Dict[int, List[int]],
                     sym: Symbolizer) -> Tuple[List[Sample], Dict[str, int]]:
    """(pid, comm, kstack id, ustack id, count) -> samples with frames; and the
    short-stack counts."""
    from .result import ENTRY_FUNCTIONS, Sample
    kframes: Dict[int, Tuple[Frame, ...]] = {}
    kids = sorted({k for _, _, k, _, _ in entries if k >= 0})
    if kids:
        flat = [x for k in kids for x in stacks[k]]
        frames = sym.kernel(flat)
        pos = 0
        for k in kids:
            n = len(stacks[k])
            kframes[k] = tuple(frames[pos:pos + n])
            pos += n
    uframes: Dict[Tuple[int, int], Tuple[Frame, ...]] = {}
    by_pid: Dict[int, List[int]] = {}
    for pid, _, _, u, _ in entries:
        if u >= 0 and (pid, u) not in uframes:
            uframes[(pid, u)] = ()
            by_pid.setdefault(pid, []).append(u)
    for pid, us in by_pid.items():
        flat = [x for u in us for x in stacks[u]]
        frames = sym.user(pid, flat)
        pos = 0
        for u in us:
            n = len(stacks[u])
            uframes[(pid, u)] = tuple(frames[pos:pos + n])
            pos += n
    samples = []
    short = empty_user = 0
    for pid, comm, k, u, n in entries:
        uf = uframes.get((pid, u), ())
        if u >= 0 and uf and uf[-1].symbol not in ENTRY_FUNCTIONS:
            short += n
        if u < 0 and u != EFAULT_STACK:
            empty_user += n
        samples.append(Sample(pid, comm, kframes.get(k, ()), uf, n))
    return samples, {"short_user_stacks": short, "user_stack_missing": empty_user}


def read_counts(obj: Any, kernel_stats: Dict[str, int], scale: int = 1,
                processes: Optional[Dict[int, Any]] = None
                ) -> Tuple[List[Sample], Dict[str, Any]]:
    """The ``counts`` map of a profile object (``profile_key`` -> u64, divided
    by ``scale``) with its stacks from ``stacks``, symbolised."""
    entries = []
    for k, v in obj.maps["counts"].items():
        pid, ks, us, _, comm = KEY.unpack(k)
        n = struct.unpack("<Q", v)[0] // scale
        if n:
            entries.append((pid, comm.split(b"\0", 1)[0].decode("utf-8", "replace"), ks, us, n))
    ids = {k for _, _, k, _, _ in entries if k >= 0} | {u for _, _, _, u, _ in entries if u >= 0}
    stacks = read_stacks(obj.maps["stacks"], ids)
    from ..symbolize import Symbolizer    # numpy only for many addresses (table.is_bulk)
    sym = Symbolizer(processes, captured=True)       # the counts are final
    samples, short = symbolize_counts(entries, stacks, sym)
    stats: Dict[str, Any] = dict(kernel_stats, **short)
    stats["unknown_frames"] = dict(sym.stats.unknown)
    stats["symbolized"] = sym.stats.addresses
    return samples, stats


def configure_watch(o: Any, watch: bool) -> None:
    """Before load: announce new processes on ``new_pids`` (stack_counts.h)."""
    o.config["cfg_new_pids"] = int(watch)
    # a power of two pages (64 KiB pages exist); 16 bytes a pid
    o.maps["new_pids"].max_entries = max(16384, PAGE_SIZE) if watch else PAGE_SIZE


def watch_new_processes(obj: Any) -> "NewProcesses":
    """After load and attach: the watcher of a stack-counting object's ``new_pids``."""
    return NewProcesses(obj.maps["new_pids"], obj.maps["seen_pids"])


def exe_mapped(pid: int, text: str) -> bool:
    """Whether ``text`` (pid's maps) holds its executable's image: not so
    between an exec's new address space and the mapping of the new binary.
    True when the executable cannot be told (gone, not ours to read)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return True
    return any(line.endswith(" " + exe) for line in text.splitlines())


class NewProcesses:
    """Reads the mappings of each process the profile program announces on
    its ``new_pids`` ring (the first time the process gets a count, and again
    after each exec or change of its executable mappings: a dlopen), so that
    a process that exits before the end of the profile still symbolises;
    when the profile stops, the maps of those still running are read once
    more (libraries loaded since their announcement).

    A thread sleeps in epoll on the ring and a stop pipe: it wakes only when
    a new process shows up (no polling, no walk of the counts map).  Maps read
    in the middle of an exec (the executable not mapped yet) are kept, and the
    pid is dropped from ``seen`` (the program's ``seen_pids``) so that its next
    new key announces it again -- at most :data:`MID_EXEC_REREADS` times a
    process (one that unmaps its own executable is not read at every new
    stack).  The thread also reads such a process's maps again every
    :data:`MID_EXEC_RETRY_S` until its executable is mapped (for
    :data:`MID_EXEC_WAIT_S` at most): a process whose few stacks were all
    counted while the exec finished adds no new key to announce it again."""

    def __init__(self, ring_map: Any, seen: Any) -> None:
        import select
        import threading
        from ..ringbuf import RingBuffer
        self.maps_text: Dict[int, List[str]] = {}    # pid -> its maps as read, in order
        self.started: Dict[int, int] = {}    # pid -> the start time of the process read
        self.seen = seen
        self.forgotten: Dict[int, int] = {}     # pid -> times dropped from seen (mid-exec)
        self.retry: Dict[int, float] = {}       # pid -> until when its maps are read again (mid-exec)
        self.ring = RingBuffer(ring_map)
        try:
            self._stop_r, self._stop_w = os.pipe()
            self._ep = select.epoll()
        except BaseException:
            self.ring.close()
            raise
        self._ep.register(self.ring.fileno(), select.EPOLLIN)
        self._ep.register(self._stop_r, select.EPOLLIN)
        self._thread = threading.Thread(target=self._run, name="pytracers-new-pids", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            ready = [fd for fd, _ in self._ep.poll(MID_EXEC_RETRY_S if self.retry else -1)]
            if self._stop_r in ready:
                return
            # a pid announced twice in one batch (two CPUs, a burst of new
            # stacks after a dlopen) is read once
            pids = dict.fromkeys(int.from_bytes(rec[:4], "little") for rec in self.ring.read(0))
            for pid in pids:
                self.take(pid)
            for pid in list(self.retry):
                if pid not in pids:
                    self._read_mid_exec(pid)

    def take(self, pid: int) -> None:
        """Read an announced process's maps (the kernel's text, kept as it
        is: parsing them and the ELF files waits for the end)."""
        born = start_time(pid)
        text = read_maps_text(pid)
        if text is None or born is None:      # gone: what was read before stays
            return
        if self.started.get(pid, born) != born:   # the pid now names another process
            self.maps_text.pop(pid, None)
            self.forgotten.pop(pid, None)
            self.retry.pop(pid, None)
        self.started[pid] = born
        self._keep(pid, text)
        if exe_mapped(pid, text):
            self.retry.pop(pid, None)
            return
        self.retry.setdefault(pid, time.monotonic() + MID_EXEC_WAIT_S)
        if self.forgotten.get(pid, 0) < MID_EXEC_REREADS:
            self.forgotten[pid] = self.forgotten.get(pid, 0) + 1
            self.seen.delete(struct.pack("<I", pid))

    def _read_mid_exec(self, pid: int) -> None:
        """Read again the maps of a process read in the middle of its exec,
        until its executable is mapped, it is gone, or its time is up."""
        until = self.retry.get(pid)
        text = None if until is None else self._read_same(pid)
        if until is None or text is None or exe_mapped(pid, text) or time.monotonic() > until:
            self.retry.pop(pid, None)

    def _read_same(self, pid: int) -> Optional[str]:
        """Read again the maps of a process read before, and keep them, if it
        is the same process (its start time unchanged); None if not (gone)."""
        text = read_maps_text(pid)
        if text is None or start_time(pid) != self.started.get(pid):
            return None
        self._keep(pid, text)
        return text

    def _keep(self, pid: int, text: str) -> None:
        read = self.maps_text.setdefault(pid, [])
        if read and read[-1] == text:
            return
        if len(read) < MAPS_READS_KEPT:
            read.append(text)
        else:        # a process that keeps changing its executable mappings (a JIT)
            read[-1] = text

    def read_again(self) -> None:
        """Read the maps of every process read before that still runs (the
        same process: its start time unchanged) once more."""
        for pid in self.started:
            self._read_same(pid)

    @property
    def processes(self) -> Dict[int, Any]:
        """pid -> ProcessSymbols from the mappings read while the process lived
        (the last read first; an address outside it is looked up in those
        read before, the images of earlier execs)."""
        from ..symbolize import ProcessSymbols
        out = {}
        for pid, texts in self.maps_text.items():
            ps = None
            for t in texts:
                ps = ProcessSymbols(pid, maps_text=t, earlier=ps)
            out[pid] = ps
        return out

    def stop(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join()
        try:
            self.read_again()
        finally:
            self._ep.close()
            self.ring.close()
            os.close(self._stop_r)
            os.close(self._stop_w)


class StackCounter:
    """What the two stack-counting profilers share once their object is
    loaded and its programs attached (``obj``, ``links``): the watcher of new
    processes, stopping, the kernel's stats, reading and symbolising the
    counts, closing."""

    obj: Any
    links: Any
    ST_NAMES: Tuple[str, ...] = ST_NAMES

    def _running(self, watch: bool) -> None:
        """Right after the attach: the clock, and the watcher when ``watch``
        (on failure the programs are detached and the object closed)."""
        self.started = time.monotonic()
        self.stopped: Optional[float] = None
        try:
            self._watcher = watch_new_processes(self.obj) if watch else None
        except BaseException:
            self.links.close()
            self.obj.close()
            raise

    def stop(self) -> None:
        """Stop counting (the counts stay readable)."""
        if self.stopped is None:
            self.links.close()
            self.stopped = time.monotonic()
            if self._watcher is not None:
                self._watcher.stop()

    def stats(self) -> Dict[str, int]:
        m = self.obj.maps["stats"]
        return {name: m.sum_percpu_u64(i) for i, name in enumerate(self.ST_NAMES)}

    def _counts(self, scale: int = 1) -> Tuple[List[Sample], Dict[str, Any], float]:
        """Stop; the symbolised samples, the stats and the duration."""
        self.stop()
        samples, stats = read_counts(self.obj, self.stats(), scale, processes=(
            self._watcher.processes if self._watcher is not None else None))
        end = self.stopped if self.stopped is not None else time.monotonic()
        return samples, stats, end - self.started

    def close(self) -> None:
        self.stop()
        self.obj.close()

    def __enter__(self: _Counter) -> _Counter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Profiler(StackCounter):
    """A running sampling profiler (``with Profiler(...) as p: ...; prof = p.result()``).

    ``frequency`` Hz on ``event`` (``auto``: cycles where there is a PMU,
    else cpu-clock) on every online CPU; ``pid``/``comm``/``cgroup`` filter
    in the kernel; ``kernel``/``user`` choose the stacks walked; ``idle``
    also counts the idle task (pid 0).  ``watch_processes``: read the
    mappings of each process as soon as it is first sampled (the BPF program
    announces it), so that short-lived ones still symbolise (False: only at
    the end, for the processes still running)."""

    def __init__(self, *, frequency: int = 99, pid: Optional[int] = None,
                 comm: Optional[str] = None, cgroup: Optional[str] = None, event: str = "auto",
                 kernel: bool = True, user: bool = True, idle: bool = False,
                 watch_processes: bool = True) -> None:
        from .. import perf
        self.frequency = frequency
        self.event = perf.resolve_event(event)
        o = _object.open(object_path("profile"))
        try:
            configure(o, pid=pid, comm=comm, cgroup=cgroup, kernel=kernel, user=user, idle=idle)
            watch = bool(user and watch_processes)
            configure_watch(o, watch)
            self.obj = o.load()
        except BaseException:
            o.close()
            raise
        try:
            self.links = self.obj.programs["profile_sample"].attach_perf_event(
                self.event, frequency=frequency)
        except BaseException:
            self.obj.close()
            raise
        self._running(watch)

    def result(self) -> Profile:
        """Stop, read the counts and stacks, symbolise: the :class:`Profile`."""
        from .result import Profile
        samples, stats, duration = self._counts()
        return Profile(samples, duration=duration, frequency=self.frequency,
                       event=self.event, stats=stats)


def profile(duration: float = 10.0, frequency: int = 99, pid: Optional[int] = None, *,
            comm: Optional[str] = None, cgroup: Optional[str] = None, event: str = "auto",
            kernel: bool = True, user: bool = True, idle: bool = False) -> Profile:
    """Sample stacks on every CPU for ``duration`` seconds at ``frequency`` Hz
    and return the :class:`~pytracers.profiler.Profile` (see :class:`Profiler`
    for the options)."""
    if not isinstance(duration, (int, float)) or duration <= 0:
        raise BadArgumentError(f"duration must be a positive number of seconds, got {duration!r}")
    with Profiler(frequency=frequency, pid=pid, comm=comm, cgroup=cgroup, event=event,
                  kernel=kernel, user=user, idle=idle) as p:
        time.sleep(duration)
        return p.result()
