"""The tracer base: one shipped object, configured, loaded, attached, read.

A :class:`Tracer` opens a precompiled object (``pytracers.object_path(name)``),
applies the pid/comm filters (as read-only config before load), sizes the ring
buffer, loads, attaches its programs, and reads the ``events`` ring.  Records
are decoded from the object's own ``.BTF`` by the event struct's name -- the
layout is never written a second time in Python.  Subclasses may derive a
record class from the BTF one to add computed attributes (a syscall's name,
arguments named after the function's parameters).

Lifetime: a tracer owns its loaded object; ``close()`` (or leaving ``with``)
detaches every link and frees the maps.  ``close()`` is safe twice.
"""
from __future__ import annotations


import collections
from typing import (Any, AsyncIterator, Callable, ClassVar, Dict, Iterator, List, Literal,
                    Optional, Sequence, Type)

from .._libbpf import HeldMessages
from .._resource import Resource
from .._shipped import object_path
from ..errors import BadArgumentError, BadTypeError, NotSupportedError, VerifierError

__all__ = ["Tracer", "encode_struct"]

COMM_LEN = 16


def check_pid(pid: Optional[int], what: str = "pid") -> Optional[int]:
    if pid is None:
        return None
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise BadTypeError(f"{what} must be an int, not {type(pid).__name__}")
    if not 0 < pid < 1 << 32:
        raise BadArgumentError(f"{what} must be a positive process id, got {pid}")
    return pid


def check_comm(comm: Optional[str]) -> Optional[str]:
    if comm is None:
        return None
    if not isinstance(comm, str):
        raise BadTypeError(f"comm must be a str, not {type(comm).__name__}")
    raw = comm.encode()
    if not raw or len(raw) >= COMM_LEN or b"\0" in raw:
        raise BadArgumentError(f"comm must be 1..{COMM_LEN - 1} bytes without NUL "
                               f"(the kernel keeps {COMM_LEN - 1}), got {comm!r}")
    return comm


def encode_struct(layout: Any, values: Dict[str, Any]) -> bytes:
    """Pack ``values`` into the bytes of a struct described by a BTF
    :class:`~pytracers.btf.StructLayout` (fields not given are zero)."""
    buf = bytearray(layout.size)
    order: Literal["little", "big"] = "little" if layout.byteorder == "<" else "big"
    for name, v in values.items():
        f = layout.field(name)
        if f.kind in ("int", "uint", "bool", "ptr"):
            buf[f.offset:f.offset + f.size] = int(v).to_bytes(f.size, order,
                                                              signed=f.kind == "int")
        elif f.kind in ("char_array", "bytes"):
            raw = v.encode() if isinstance(v, str) else bytes(v)
            if len(raw) > f.size:
                raise BadArgumentError(f"{name} holds at most {f.size} bytes")
            buf[f.offset:f.offset + len(raw)] = raw
        else:
            raise BadArgumentError(f"cannot encode field {name} of kind {f.kind}")
    return bytes(buf)


def named_tuple(name: str, fields: Sequence[str]) -> Any:
    """A namedtuple class with ``fields`` (invalid names renamed _0, _1...)."""
    return collections.namedtuple(name, list(fields), rename=True)


class Tracer(Resource):
    """Base of the precompiled tracers.

    Subclasses set ``object_name`` (the shipped object), ``event_struct`` (the
    record's struct name in the object's BTF), ``kind`` and implement
    :meth:`_configure` (choose programs, set config) and :meth:`_attach`.

    Common keyword arguments: ``pid`` / ``comm`` (only events of this process
    id / command name; set before load, so the verifier prunes the check
    away when unused), ``ring_size`` (bytes, a power of two number of pages),
    ``wakeup_bytes`` (wake the reader once this many bytes are pending, then
    not again until it has drained; default None: a quarter of the ring; 0:
    the kernel's own policy, a wakeup for every record that finds the reader
    caught up -- up to one per event, 1-3 us each on the traced path),
    ``latency`` (seconds a record may wait when wakeups are suppressed: the
    reader looks at the ring at least this often, so a trickle of events
    below the threshold is delivered within it), ``stack`` (``"kernel"``,
    ``"user"`` or ``"both"``: each record carries the stacks where it was
    made, ``ev.kstack`` / ``ev.ustack``, see :mod:`pytracers.tracers.stacks`).
    """

    _what = "tracer"
    object_name: ClassVar[str] = ""
    event_struct: ClassVar[str] = ""
    kind: str = ""
    why: str = ""
    MAX_LOAD_ATTEMPTS = 4

    def __init__(self, *, pid: Optional[int] = None, comm: Optional[str] = None,
                 ring_size: Optional[int] = None, wakeup_bytes: Optional[int] = None,
                 latency: float = 0.1, stack: Optional[str] = None) -> None:
        self.pid = check_pid(pid)
        self.stack = stack
        stacks = 0
        if stack is not None:        # the stacks module (and symbolize) only when asked
            from .stacks import STACK_MAP_ENTRIES, stack_bits
            stacks = stack_bits(stack)
        self._stacks: Any = None
        self.comm = check_comm(comm)
        if wakeup_bytes is not None and (not isinstance(wakeup_bytes, int)
                                         or isinstance(wakeup_bytes, bool) or wakeup_bytes < 0):
            raise BadArgumentError("wakeup_bytes must be a non-negative int (or None)")
        self.links: List[Any] = []
        from ..object import open as open_object   # the object model, on first use
        for attempt in range(self.MAX_LOAD_ATTEMPTS):
            held = HeldMessages()
            open_obj = open_object(object_path(self.object_name))
            try:
                self._configure(open_obj)
                if self.pid:
                    open_obj.config["cfg_pid"] = self.pid
                if self.comm:
                    open_obj.config["cfg_comm"] = self.comm
                if ring_size is not None:
                    open_obj.maps["events"].max_entries = ring_size
                if stacks:
                    open_obj.config["cfg_stacks"] = stacks
                    open_obj.maps["stacks"].max_entries = STACK_MAP_ENTRIES
                self.wakeup_bytes = (wakeup_bytes if wakeup_bytes is not None
                                     else open_obj.maps["events"].max_entries // 4)
                if self.wakeup_bytes:
                    open_obj.config["cfg_wakeup_bytes"] = self.wakeup_bytes
                with held:
                    obj = open_obj.load()
                held.release()
                break
            except (VerifierError, NotSupportedError) as e:
                open_obj.close()
                if attempt + 1 == self.MAX_LOAD_ATTEMPTS or not self._retry_after(e):
                    held.release()
                    raise
                held.release(demote=True)     # handled: logged at DEBUG only
            except BaseException:
                open_obj.close()
                held.release()
                raise
        self.object = obj
        self._own(obj.close)
        try:
            self._after_load(obj)
            self._attach(obj)
            # The probes run from here on; what they record waits in the ring
            # map until the reader exists.  The reader and its decoder come
            # after the attach: they took ~6 of the ms between a command's
            # start and its probes running (BENCHMARKS.md section 13).
            self._ring = obj.ring_buffer("events", decoder=self._decoder(obj),
                                         event=self.event_struct, latency=latency)
        except BaseException:
            self.close()
            raise

    # ---- subclass hooks ------------------------------------------------------------
    def _configure(self, open_obj: Any) -> None:
        """Before load: choose programs (``open_obj.only(...)``), set config."""

    def _retry_after(self, error: Any) -> bool:
        """The load failed (VerifierError, or NotSupportedError when the
        program calls a helper the kernel lacks): adjust the configuration and
        return True to try again (at most MAX_LOAD_ATTEMPTS loads in all)."""
        return False

    def _after_load(self, obj: Any) -> None:
        """After load, before attach: fill maps."""

    def _attach(self, obj: Any) -> None:
        raise NotImplementedError

    def _record_class(self, base: Type[Any]) -> Optional[Type[Any]]:
        """A subclass of the BTF record class adding computed attributes, or None."""
        return None

    # ---- decoding --------------------------------------------------------------------
    #: With stack=: a function of a record, true when its user stack was taken
    #: in an image the process has since replaced (None: never).
    _ustack_replaced: Optional[Callable[[Any], bool]] = None

    @property
    def layout(self) -> Any:
        """The event struct's layout, read from the object's BTF."""
        return self.object.btf.struct_layout(self.event_struct)

    def _decoder(self, obj: Any) -> Callable[[Any, int], Any]:
        layout = obj.btf.struct_layout(self.event_struct)
        dec = layout.decoder()
        cls = self._record_class(layout.record_class())
        if self.stack:
            from .stacks import StackReader, with_stacks
            self._stacks = StackReader(obj.maps["stacks"])
            cls = with_stacks(cls if cls is not None else layout.record_class(), self._stacks,
                              self._ustack_replaced)
        if cls is None:
            return dec
        tuple_new = tuple.__new__

        def decode(buffer: Any, offset: int = 0) -> Any:
            return tuple_new(cls, dec(buffer, offset))
        return decode

    def _link(self, link: Any) -> Any:
        self.links.append(link)
        return link

    # ---- reading --------------------------------------------------------------------
    def events(self, timeout: Optional[float] = None) -> Iterator[Any]:
        """Iterate over events as they arrive, for ``timeout`` seconds in all
        (None: until the loop breaks or the tracer is closed)."""
        self._check()
        return self._ring.events(timeout)

    def __iter__(self) -> Iterator[Any]:
        return self.events()

    def __aiter__(self) -> AsyncIterator[Any]:
        """``async for ev in tracer`` (and ``async with tracer``): see
        :mod:`pytracers.aio`."""
        from ..aio import events
        self._check()
        return events(self._ring)

    @property
    def ring(self) -> Any:
        """The :class:`~pytracers.ringbuf.RingBuffer` the events come from."""
        return self._ring

    def poll(self, timeout: Optional[float] = None,
             callback: Optional[Callable[[Any], Any]] = None) -> int:
        """Wait up to ``timeout`` seconds for events and pass each to
        ``callback`` (return False to stop); returns how many were delivered."""
        self._check()
        if callback is None:
            raise BadArgumentError("poll() needs a callback")
        return int(self._ring.poll(timeout, callback))

    def read(self, timeout: float = 0.0) -> List[Any]:
        """The events available now, waiting up to ``timeout`` for the first."""
        self._check()
        return list(self._ring.read(timeout))

    def fileno(self) -> int:
        """An fd that becomes readable when events arrive (for select/epoll)."""
        self._check()
        return int(self._ring.fileno())

    @property
    def lost(self) -> int:
        """Events dropped because the ring buffer was full (all CPUs)."""
        self._check()
        return int(self.object.maps["lost"].sum_percpu_u64())

    @property
    def stack_stats(self) -> Dict[str, Any]:
        """With ``stack=``: stacks lost (the map full or a hash collision:
        ``lost``), addresses symbolised and ``[unknown]`` frames by reason."""
        return self._stacks.stats if self._stacks is not None else {}

    @property
    def delivered(self) -> int:
        return int(self._ring.delivered)

    # ---- records as data -------------------------------------------------------------
    #: Record fields and attributes that only serve decoding (flag words,
    #: packed buffers, raw registers): :meth:`event_dict` leaves them out.
    record_internals: ClassVar[Sequence[str]] = ()

    def event_dict(self, ev: Any) -> Dict[str, Any]:
        """One of this tracer's records as a dict of plain values, ready for
        ``json.dumps``: the record's fields in order, with the computed
        attributes of its class (``name``, ``args``, ``ret``, ``latency_ns``...)
        in place of the raw fields, and :attr:`record_internals` and private
        fields left out; bytes become str (up to the first NUL), named tuples
        dicts, tuples lists.  ``pytracers trace --json`` prints these."""
        from ._records import record_dict
        return record_dict(ev, self.record_internals)

    # ---- filters after load -------------------------------------------------------
    def set_filter(self, pid: Optional[int] = None, comm: Optional[str] = None) -> None:
        """Change the run-time filter (the ``filters`` map): only events of
        ``pid`` and/or ``comm``; ``set_filter()`` clears it.  The load-time
        ``pid``/``comm`` given to the constructor still apply."""
        self._check()
        pid = check_pid(pid)
        comm = check_comm(comm)
        layout = self.object.btf.struct_layout("pytracers_filter")
        value = encode_struct(layout, {"pid": pid or 0, "use_comm": 1 if comm else 0,
                                       "comm": comm or ""})
        self.object.maps["filters"].update(0, value)

    def __enter__(self) -> "Tracer":
        self._check()
        return self

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<{type(self).__name__} kind={self.kind}{state}>"


