"""The event loop every streaming command shares, and how it stops.

A command opens a :class:`Source` (a started tracer), then hands it to
:func:`run_events`, which owns it from then on: it polls until ``--duration``
ends, SIGINT/SIGTERM arrives (:class:`Stopper`) or stdout closes, detaches
the probes and prints the summary on stderr.
"""
from __future__ import annotations

import os
import select
import signal
import sys
import time
from types import FrameType
from typing import Any, Callable, Dict, Optional, Tuple

from .. import errors as E
from .output import Output, note, silence_stdout
from .status import EXIT_OK

POLL_SLICE = 0.1         # seconds between looks at the stop flag and the deadline


def need_bpf_privileges() -> None:
    """Fail early, in one line, when this process cannot load tracing programs."""
    from ..kernel.host import missing_bpf_caps
    cap = missing_bpf_caps(tracing=True)
    if cap:
        raise E.PermissionDeniedError(
            "loading BPF tracing programs", cap,
            detail="not running as root" if os.geteuid() != 0 else
            "this root process has had its capabilities dropped")


class Stopper:
    """Turns SIGINT/SIGTERM into a flag the event loop looks at.

    The first signal asks the loop to stop; cleanup (detaching links, reading
    the lost counters, printing the summary) then runs undisturbed.  A second
    SIGINT while stopping raises KeyboardInterrupt (exit 130): the process
    exits and the kernel still detaches every link with its last fd.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.reason = ""
        self._old: Dict[int, Any] = {}

    def _handler(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum
            self.reason = f"stopped by {signal.Signals(signum).name}"

    def stop(self, reason: str) -> None:
        if not self.reason:
            self.reason = reason

    @property
    def stopped(self) -> bool:
        return self.signum is not None or bool(self.reason)

    def wait(self, timeout: float) -> None:
        """Sleep until a stop signal or ``timeout`` seconds, blocked in
        select(2) on the signal wake-up fd (no polling): a signal writes to
        the fd even when it arrives just before select."""
        end = time.monotonic() + timeout
        r, w = os.pipe()
        try:
            os.set_blocking(w, False)
            try:
                old = signal.set_wakeup_fd(w)
            except ValueError:      # not the main thread: signals are not ours to wait for
                while not self.stopped and time.monotonic() < end:
                    time.sleep(min(0.1, max(0.0, end - time.monotonic())))
                return
            try:
                while not self.stopped:
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    select.select([r], [], [], left)
            finally:
                signal.set_wakeup_fd(old)
        finally:
            os.close(r)
            os.close(w)

    def __enter__(self) -> "Stopper":
        for s in self.SIGNALS:
            self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class Source:
    """What the event loop reads: a started tracer seen through one interface.

    ``poll(timeout, callback)`` delivers decoded records; ``lost`` counts the
    records the kernel side could not reserve; ``close()`` detaches and frees.
    ``kind`` and ``why`` say which probe kind runs and why it was chosen.
    """

    kind = ""
    why = ""
    target = ""
    #: poll() hands records to handlers of its own, not to the callback: the
    #: loop reads how many it took from :attr:`taken` instead of counting
    counts_itself = False
    taken = 0

    def poll(self, timeout: float, callback: Callable[[Any], Any]) -> int:
        raise NotImplementedError

    @property
    def lost(self) -> int:
        return 0

    def close(self) -> None:
        pass


class TracerSource(Source):
    """A pytracers tracer (:class:`~pytracers.tracers.Tracer`) as a Source;
    ``target`` is what the command says it traces."""

    def __init__(self, tracer: Any, target: str = "") -> None:
        self.tracer = tracer
        self.kind = tracer.kind
        self.why = tracer.why
        self.target = target

    def poll(self, timeout: float, callback: Callable[[Any], Any]) -> int:
        return int(self.tracer.poll(timeout, callback))

    @property
    def lost(self) -> int:
        return int(self.tracer.lost)

    def close(self) -> None:
        self.tracer.close()


class BatchSource(TracerSource):
    """A tracer read a batch at a time: ``on_rows(rows)`` gets each run of
    records as a numpy view into the ring (``consume_views``) and handles
    it whole (``trace --json`` formats and writes it in one go); poll()
    returns how many records it took, and the event loop counts them.

    Until the first backlog, records go one at a time to ``on_event`` (the
    same lines, per event) when it is given: a command's first lines then
    come without importing numpy (~30 ms of its start, issue 16).  Once
    more than ``WARM_BYTES`` wait in the ring, or numpy is already loaded,
    every later read is a batch."""

    counts_itself = True
    BATCH = 65536                 # records per callback at most
    WARM_BYTES = 16384            # per event below this backlog, until the first batch
    WARM_RECORDS = 256            # records per poll while per event

    def __init__(self, tracer: Any, target: str, on_rows: Callable[[Any], Any],
                 on_event: Optional[Callable[[Any], Any]] = None) -> None:
        super().__init__(tracer, target)
        self.on_rows = on_rows
        self.on_event = on_event
        self.warm = on_event is not None and "numpy" not in sys.modules
        self.taken = 0

    # Counted before they are handled: a handler that raises (stdout closed
    # part way through a batch) leaves them taken from the ring all the same.
    def _rows(self, rows: Any) -> None:
        self.taken += len(rows)
        self.on_rows(rows)

    def _event(self, ev: Any) -> None:
        self.taken += 1
        assert self.on_event is not None
        self.on_event(ev)

    def _read(self, ring: Any) -> int:
        if self.warm:
            if ring.pending_bytes() <= self.WARM_BYTES:
                # at most this many: a storm starting meanwhile is the batches' work
                return int(ring.consume(self._event, limit=self.WARM_RECORDS))
            self.warm = False                        # batches from now on
        return int(ring.consume_views(self._rows, max_records=self.BATCH))

    def poll(self, timeout: float, callback: Callable[[Any], Any]) -> int:
        ring = self.tracer.ring
        n = self._read(ring)
        if n or timeout <= 0:
            return n
        # the ring's latency bound: with batched wakeups the kernel may not
        # signal before the records are due
        select.select([ring.fileno()], [], [], min(timeout, ring.latency))
        return self._read(ring)


def run_events(source: Source, out: Output, stopper: Stopper, duration: Optional[float],
               on_event: Callable[[Any], None], *, what: str, ready: str,
               tick: Optional[Tuple[float, Callable[[], None]]] = None,
               at_end: Optional[Callable[[], None]] = None,
               counted: Optional[Callable[[], int]] = None, seen_word: str = "event") -> int:
    """The event loop shared by every streaming command.  It owns ``source``
    from the start: prints the header (human mode) and then ``ready`` on
    stderr, polls until the duration ends, a signal arrives or stdout closes;
    then detaches, and prints the summary (events seen and lost) on stderr."""
    start = time.monotonic()
    seen_count = counted
    seen = [0]

    def deliver(ev: Any) -> None:
        seen[0] += 1
        on_event(ev)

    lost: Optional[int] = None
    elapsed = 0.0
    try:
        try:
            out.header()
            out.flush()
            note(ready + "; Ctrl-C to stop")
            start = time.monotonic()
            deadline = None if not duration else start + duration
            next_tick = None if tick is None else start + tick[0]
            while not stopper.stopped:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    stopper.stop(f"after {duration:g} s")
                    break
                wait = POLL_SLICE
                if deadline is not None:
                    wait = min(wait, deadline - now)
                if next_tick is not None:
                    wait = max(0.0, min(wait, next_tick - now))
                if source.poll(wait, deliver):
                    out.flush()
                if tick is not None and next_tick is not None and time.monotonic() >= next_tick:
                    tick[1]()
                    out.flush()
                    next_tick += tick[0]
            source.poll(0.0, deliver)            # what was already in the ring
            if at_end is not None:
                at_end()
            out.flush()
        except BrokenPipeError:
            stopper.stop("stdout closed")
            silence_stdout()
        elapsed = time.monotonic() - start
        lost = source.lost
    finally:
        source.close()
    reason = stopper.reason or "stopped"
    n_seen = (seen_count() if seen_count is not None else
              source.taken if source.counts_itself else seen[0])
    shown = "" if out.rows == n_seen or not out.columns else f", {out.rows} shown"
    if seen_count is None:
        note(f"{what}: {n_seen} event{'s' if n_seen != 1 else ''} seen{shown}, {lost} lost "
             f"in {elapsed:.1f} s ({reason}); probes detached")
    else:
        note(f"{what}: {n_seen} {seen_word}{'s' if n_seen != 1 else ''} counted in the kernel, "
             f"{lost} not counted in {elapsed:.1f} s ({reason}); probes detached")
    return EXIT_OK
