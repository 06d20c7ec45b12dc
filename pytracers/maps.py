"""Maps of a loaded object: lookup, update, delete, iteration.

Keys and values are bytes of exactly the map's key/value size, or ints (packed
little-endian to that size).  ``lookup`` returns bytes; the typed view
(:attr:`Map.typed`) decodes values through the object's BTF: integers become
ints and structs become records.  Per-CPU maps return one value per possible
CPU.

A refusal by the kernel raises :class:`~pytracers.errors.MapError` (an
OSError with its errno); ``m[key]`` and ``del m[key]`` of a missing key raise
:class:`~pytracers.errors.KeyNotFoundError` (a KeyError).
"""
from __future__ import annotations

import enum
import errno as _errno
from typing import TYPE_CHECKING, Any, Callable, Iterator, List, Optional, Tuple, Union

from . import _libbpf
from ._libbpf import checked
from ._libbpf import ffi, lib
from .errors import (ENOTSUPP, BadArgumentError, BadTypeError, KeyNotFoundError, MapError,
                     PytracersError)

if TYPE_CHECKING:
    from .mapbatch import Batch
    from .object import Object
    from .perfbuf import PerfBuffer
    from .ringbuf import RingBuffer

__all__ = ["Map", "MapType", "MAP_TYPES", "BPF_ANY", "BPF_NOEXIST", "BPF_EXIST", "PinnedMap",
           "open_pinned_map"]


class MapType(enum.IntEnum):
    """The kernel's ``enum bpf_map_type`` (include/uapi/linux/bpf.h), named as
    there without the ``BPF_MAP_TYPE_`` prefix; ``Map.type`` compares equal."""

    HASH = 1
    ARRAY = 2
    PROG_ARRAY = 3
    PERF_EVENT_ARRAY = 4
    PERCPU_HASH = 5
    PERCPU_ARRAY = 6
    STACK_TRACE = 7
    CGROUP_ARRAY = 8
    LRU_HASH = 9
    LRU_PERCPU_HASH = 10
    LPM_TRIE = 11
    ARRAY_OF_MAPS = 12
    HASH_OF_MAPS = 13
    DEVMAP = 14
    SOCKMAP = 15
    CPUMAP = 16
    XSKMAP = 17
    SOCKHASH = 18
    CGROUP_STORAGE = 19
    REUSEPORT_SOCKARRAY = 20
    PERCPU_CGROUP_STORAGE = 21
    QUEUE = 22
    STACK = 23
    SK_STORAGE = 24
    DEVMAP_HASH = 25
    STRUCT_OPS = 26
    RINGBUF = 27
    INODE_STORAGE = 28
    TASK_STORAGE = 29
    BLOOM_FILTER = 30
    USER_RINGBUF = 31
    CGRP_STORAGE = 32


# type number -> lower-case name ("hash", "percpu_array", ...), as Map.type_name
MAP_TYPES = {t.value: t.name.lower() for t in MapType}
PERCPU = frozenset({MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH,
                    MapType.PERCPU_CGROUP_STORAGE})
ARRAYS = frozenset({MapType.ARRAY, MapType.PERCPU_ARRAY})   # fixed slots: no delete
RINGBUF = MapType.RINGBUF

# Map.update's flags, as the kernel names them: create or replace; create
# only (MapError EEXIST when the key is there); replace only (ENOENT when not)
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
Key = Union[bytes, bytearray, memoryview, int]

_ncpus: Optional[int] = None


def possible_cpus() -> int:
    global _ncpus
    if _ncpus is None:
        _ncpus = int(checked(lib.libbpf_num_possible_cpus, what="count possible CPUs",
                             error=MapError))
    return _ncpus


def _encode(what: str, v: Any, size: int) -> bytes:
    if isinstance(v, bool):
        v = int(v)
    if isinstance(v, int):
        if size not in (1, 2, 4, 8):
            raise BadTypeError(f"this map's {what} is {size} bytes; pass bytes, not an int")
        try:
            return v.to_bytes(size, "little", signed=v < 0)
        except OverflowError:
            raise BadArgumentError(f"{v} does not fit a {size}-byte {what}") from None
    if isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        if len(b) != size:
            raise BadArgumentError(f"wrong {what} size: this map takes {size} bytes, got {len(b)}")
        return b
    raise BadTypeError(f"map {what} must be bytes or int, not {type(v).__name__}")


class Map:
    """A map of a loaded object (owned by it: valid until the object closes)."""

    def __init__(self, obj: "Object", ptr: Any, name: str, type_: int, key_size: int,
                 value_size: int, max_entries: int) -> None:
        self.object = obj
        self._ptr = ptr
        self.name = name
        self.type = type_
        self.type_name = MAP_TYPES.get(type_, str(type_))
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.percpu = type_ in PERCPU
        self._typed: Optional["TypedMap"] = None
        self.last_batch_path = ""    # "batch" or "per-entry": how the last batch call ran

    @classmethod
    def _from_object(cls, obj: "Object", ptr: Any) -> "Map":
        return cls(obj, ptr, _libbpf.cstr(lib.bpf_map__name(ptr)) or "", lib.bpf_map__type(ptr),
                   lib.bpf_map__key_size(ptr), lib.bpf_map__value_size(ptr),
                   lib.bpf_map__max_entries(ptr))

    def __repr__(self) -> str:
        return f"<Map {self.name} {self.type_name} key={self.key_size} value={self.value_size}>"

    @property
    def fd(self) -> int:
        self.object._check()
        return int(lib.bpf_map__fd(self._ptr))

    def _not_ring(self) -> None:
        if self.type == RINGBUF:
            raise BadArgumentError(f"{self.name} is a ring buffer; read it with ring_buffer()")

    @property
    def _slot(self) -> int:
        """Bytes one value occupies in a lookup buffer (per-CPU: 8-aligned per CPU)."""
        return (self.value_size + 7) // 8 * 8 if self.percpu else self.value_size

    def _value_buf(self) -> Any:
        n = possible_cpus() if self.percpu else 1
        return ffi.new("char[]", max(1, self._slot * n))

    def _split(self, buf: Any) -> Union[bytes, List[bytes]]:
        if not self.percpu:
            return bytes(ffi.buffer(buf, self.value_size))
        raw = ffi.buffer(buf)
        return [bytes(raw[i * self._slot:i * self._slot + self.value_size])
                for i in range(possible_cpus())]

    def lookup(self, key: Key) -> Optional[Union[bytes, List[bytes]]]:
        """The value for ``key`` (per-CPU maps: a list, one per CPU), or None."""
        self._not_ring()
        k = _encode("key", key, self.key_size)
        buf = self._value_buf()
        if checked(lib.bpf_map_lookup_elem, self.fd, k, buf, what=f"lookup in map {self.name!r}",
                   error=MapError, expected=(_errno.ENOENT,)) is None:
            return None
        return self._split(buf)

    def __getitem__(self, key: Key) -> Union[bytes, List[bytes]]:
        v = self.lookup(key)
        if v is None:
            raise KeyNotFoundError(key, f"map {self.name!r}")
        return v

    def update(self, key: Key, value: Any, flags: int = BPF_ANY) -> None:
        """Set ``key`` to ``value``. Per-CPU maps take one value per CPU (a
        list), or a single value for every CPU.  ``flags``: BPF_ANY (create
        or replace), BPF_NOEXIST (create only) or BPF_EXIST (replace only)."""
        self._not_ring()
        k = _encode("key", key, self.key_size)
        if self.percpu:
            n = possible_cpus()
            vals = value if isinstance(value, (list, tuple)) else [value] * n
            if len(vals) != n:
                raise BadArgumentError(f"per-CPU map {self.name} needs {n} values, got {len(vals)}")
            v = b"".join(_encode("value", x, self.value_size).ljust(self._slot, b"\0")
                         for x in vals)
        else:
            v = _encode("value", value, self.value_size)
        checked(lib.bpf_map_update_elem, self.fd, k, v, flags, what=f"update map {self.name!r}",
                error=MapError, refine=lambda err, log: self._update_refused(err, key))

    def _update_refused(self, err: int, key: Key) -> Optional[PytracersError]:
        if err == _errno.EPERM and self.name.endswith(".rodata"):
            return MapError(f"update map {self.name!r}", err, "libbpf freezes the read-only "
                            "data section at load: set const volatile globals through "
                            "OpenObject.config before load")
        if err == _errno.E2BIG:
            return BadArgumentError(f"map {self.name} is full ({self.max_entries} entries)")
        if err == _errno.EINVAL and self.type in ARRAYS and isinstance(key, int):
            return BadArgumentError(f"index {key} out of range for array map {self.name} "
                                    f"({self.max_entries} entries)")
        return None

    def __setitem__(self, key: Key, value: Any) -> None:
        self.update(key, value)

    def delete(self, key: Key) -> bool:
        """Delete ``key``; False if it was not there."""
        self._not_ring()
        k = _encode("key", key, self.key_size)
        return checked(lib.bpf_map_delete_elem, self.fd, k, what=f"delete from map {self.name!r}",
                       error=MapError, expected=(_errno.ENOENT,),
                       refine=self._delete_refused) is not None

    def _delete_refused(self, err: int, log: Any) -> Optional[BadArgumentError]:
        if err == _errno.EINVAL and self.type in ARRAYS:
            return BadArgumentError(f"array map {self.name}: entries cannot be deleted")
        return None

    def __delitem__(self, key: Key) -> None:
        if not self.delete(key):
            raise KeyNotFoundError(key, f"map {self.name!r}")

    def keys(self) -> Iterator[bytes]:
        self._not_ring()
        cur = ffi.NULL
        nxt = ffi.new("char[]", max(1, self.key_size))
        while checked(lib.bpf_map_get_next_key, self.fd, cur, nxt,
                      what=f"iterate map {self.name!r}", error=MapError,
                      expected=(_errno.ENOENT,)) is not None:
            k = bytes(ffi.buffer(nxt, self.key_size))
            yield k
            cur = ffi.new("char[]", k)

    def __iter__(self) -> Iterator[bytes]:
        return self.keys()

    def items(self) -> Iterator[Tuple[bytes, Union[bytes, List[bytes]]]]:
        for k in self.keys():
            v = self.lookup(k)
            if v is not None:      # deleted while we iterated
                yield k, v

    def values(self) -> Iterator[Union[bytes, List[bytes]]]:
        for _, v in self.items():
            yield v

    def lookup_and_delete(self, key: Key) -> Optional[Union[bytes, List[bytes]]]:
        """Remove ``key`` and return the value it had (None if absent), in one
        step on kernels that can (hash maps from 5.14; queues and stacks
        always); on older kernels a lookup then a delete (an update between
        the two is lost)."""
        self._not_ring()
        k = _encode("key", key, self.key_size)
        buf = self._value_buf()
        what = f"lookup and delete in map {self.name!r}"
        unsupported = []

        def refine(err: int, log: Any) -> Optional[PytracersError]:
            if err in (_errno.EOPNOTSUPP, ENOTSUPP) and self.type not in ARRAYS:
                unsupported.append(err)
                return _Unsupported(what, err, "")
            return self._delete_refused(err, log)
        try:
            if checked(lib.bpf_map_lookup_and_delete_elem, self.fd, k, buf, what=what,
                       error=MapError, expected=(_errno.ENOENT,), refine=refine) is None:
                return None
        except _Unsupported:
            v = self.lookup(k)
            if v is None or not self.delete(k):
                return None
            return v
        return self._split(buf)

    # -- batches (pytracers.mapbatch) -------------------------------------------------
    def lookup_batch(self, *, key_dtype: Any = None, value_dtype: Any = None,
                     chunk: Optional[int] = None) -> "Batch":
        """Every entry at once, as numpy arrays (``.keys``, ``.values``;
        ``.to_dict()``): see :mod:`pytracers.mapbatch`."""
        from .mapbatch import lookup_batch
        return lookup_batch(self, key_dtype=key_dtype, value_dtype=value_dtype, chunk=chunk)

    def lookup_and_delete_batch(self, *, key_dtype: Any = None, value_dtype: Any = None,
                                chunk: Optional[int] = None) -> "Batch":
        """Every entry, each removed as it is read (read-and-reset without
        losing a concurrent update); not for array maps."""
        from .mapbatch import lookup_batch
        return lookup_batch(self, delete=True, key_dtype=key_dtype, value_dtype=value_dtype,
                            chunk=chunk)

    def update_batch(self, keys: Any, values: Any = None, flags: int = BPF_ANY) -> int:
        """Write many entries (numpy arrays, sequences, or a dict); returns the count."""
        from .mapbatch import update_batch
        return update_batch(self, keys, values, flags)

    def delete_batch(self, keys: Any) -> int:
        """Delete many keys; returns the count."""
        from .mapbatch import delete_batch
        return delete_batch(self, keys)

    def pin(self, path: str) -> None:
        """Pin the map in bpffs (mode 0600) so it outlives this process;
        ``os.unlink(path)`` unpins it."""
        import os

        from .link import check_pin_path
        check_pin_path(path)
        fd = self.fd
        old = os.umask(0o177)   # the kernel creates the pin with 0600 & ~umask
        try:
            checked(lib.bpf_obj_pin, fd, path.encode(), what=f"pin map {self.name!r} at {path}",
                    error=MapError)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)

    def sum_percpu_u64(self, key: Key = 0) -> int:
        """Sum a per-CPU u64 counter over all CPUs (0 when absent)."""
        v = self.lookup(key)
        if v is None:
            return 0
        vals = v if isinstance(v, list) else [v]
        return sum(int.from_bytes(x[:8], "little") for x in vals)

    @property
    def typed(self) -> "TypedMap":
        """This map with keys and values decoded through the object's BTF."""
        if self._typed is None:
            self._typed = TypedMap(self)
        return self._typed

    def ring_buffer(self, *, event: Any = None,
                    decoder: Optional[Callable[[Any, int], Any]] = None,
                    **kw: Any) -> "RingBuffer":
        """Open this ring-buffer map for reading (see pytracers.ringbuf)."""
        from .ringbuf import RingBuffer
        if self.type == MapType.PERF_EVENT_ARRAY:
            raise BadArgumentError(f"map {self.name} is a perf_event_array map, not a ring "
                                   "buffer: read it with perf_buffer(), or output() (either "
                                   "kind)")
        if self.type != RINGBUF:
            raise BadArgumentError(f"map {self.name} is a {self.type_name} map, not a ring buffer")
        # With event= and no decoder, RingBuffer decodes through the event's
        # BTF layout (and its batch reader takes the layout's numpy dtype).
        rb = RingBuffer(self, decoder=decoder, event=event, **kw)
        self.object._adopt(rb)
        return rb


    def perf_buffer(self, *, event: Any = None,
                    decoder: Optional[Callable[[Any, int], Any]] = None,
                    **kw: Any) -> "PerfBuffer":
        """Open this perf-event-array map for reading (see pytracers.perfbuf)."""
        from .perfbuf import PerfBuffer
        if self.type != MapType.PERF_EVENT_ARRAY:
            hint = ": read it with ring_buffer(), or output()" if self.type == RINGBUF else ""
            raise BadArgumentError(f"map {self.name} is a {self.type_name} map, not a perf "
                                   f"event array{hint}")
        pb = PerfBuffer(self, decoder=decoder, event=event, **kw)
        self.object._adopt(pb)
        return pb
class _Unsupported(MapError):
    """Internal: the kernel lacks an operation that has a fallback (caught here)."""


class PinnedMap(Map):
    """A map opened from its bpffs pin (:func:`open_pinned_map`): the same
    operations as a loaded object's map, on a map another process (or an
    earlier run) created.  Owns its file descriptor: ``close()`` it (or use
    ``with``); the map lives on while it is pinned."""

    def __init__(self, path: str, fd: int, info: Any) -> None:
        from ._resource import Resource
        obj: Any = None              # no object: fd below
        super().__init__(obj, None, ffi.string(info.name).decode("utf-8", "replace"),
                         int(info.type), int(info.key_size), int(info.value_size),
                         int(info.max_entries))
        self.path = path
        self.id = int(info.id)
        self.map_flags = int(info.map_flags)
        self._res = Resource()
        self._res._what = f"pinned map {path}"
        import os
        self._res._own(os.close, fd)
        self._fd = fd

    @property
    def fd(self) -> int:
        self._res._check()
        return self._fd

    def close(self) -> None:
        """Close our descriptor (the pin, and the map, stay). Safe twice."""
        self._res.close()

    @property
    def closed(self) -> bool:
        return self._res.closed

    def __enter__(self) -> "PinnedMap":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def typed(self) -> "TypedMap":
        raise BadArgumentError("a pinned map has no object BTF here: decode its bytes "
                               "(numpy dtypes with lookup_batch, or a StructLayout)")

    def ring_buffer(self, **kw: Any) -> "RingBuffer":
        raise BadArgumentError("open the ring buffer of a pinned map from its object")

    def __repr__(self) -> str:
        return (f"<PinnedMap {self.path} {self.type_name} key={self.key_size} "
                f"value={self.value_size}{' closed' if self.closed else ''}>")


def fd_kind(fd: int) -> str:
    """What a BPF file descriptor refers to: "map", "prog", "link" (from
    /proc/self/fdinfo), or "object" when it does not say."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            text = f.read()
    except OSError:
        return "object"
    for kind in ("map", "link", "prog"):
        if f"\n{kind}_type:" in text:
            return kind
    return "object"


def open_pinned_map(path: str) -> PinnedMap:
    """The map pinned at ``path`` in bpffs (by :meth:`Map.pin`, bpftool, or
    any libbpf program), for reading and writing from this process."""
    from .link import check_pin_path
    check_pin_path(path)
    fd = checked(lib.bpf_obj_get, path.encode(), what=f"open pinned map {path}",
                 error=MapError)
    info = ffi.new("struct bpf_map_info *")
    n = ffi.new("__u32 *", ffi.sizeof("struct bpf_map_info"))
    try:
        what = fd_kind(fd)
        if what != "map":
            raise BadArgumentError(f"{path} is a pinned {what}, not a map")
        checked(lib.bpf_obj_get_info_by_fd, fd, info, n, what=f"read the info of {path}",
                error=MapError)
    except BaseException:
        import os
        os.close(fd)
        raise
    return PinnedMap(path, fd, info)


class TypedMap:
    """Keys and values decoded through BTF: ints as int, structs as records."""

    def __init__(self, m: Map) -> None:
        self.map = m
        btf = m.object.btf
        self._kdec = _btf_codec(btf, lib.bpf_map__btf_key_type_id(m._ptr), m.key_size)
        self._vdec = _btf_codec(btf, lib.bpf_map__btf_value_type_id(m._ptr), m.value_size)

    def _val(self, v: Any) -> Any:
        if isinstance(v, list):
            return [self._vdec(x) for x in v]
        return self._vdec(v)

    def __getitem__(self, key: Key) -> Any:
        return self._val(self.map[key])

    def get(self, key: Key, default: Any = None) -> Any:
        v = self.map.lookup(key)
        return default if v is None else self._val(v)

    def items(self) -> Iterator[Tuple[Any, Any]]:
        for k, v in self.map.items():
            yield self._kdec(k), self._val(v)


def _btf_codec(btf: Any, type_id: int, size: int) -> Callable[[bytes], Any]:
    """A decoder for a value of BTF type ``type_id``: ints and enums as int,
    structs as records; anything else (or no BTF) as bytes."""
    from .btf import BtfError, Kind
    if not type_id:
        return bytes
    try:
        t = btf.resolve(btf.type(type_id))
    except BtfError:
        return bytes
    if t.kind in (Kind.INT, Kind.ENUM, Kind.ENUM64):
        signed = bool(t.signed)
        return lambda b: int.from_bytes(b[:size], "little", signed=signed)
    if t.kind == Kind.STRUCT:
        try:
            dec = btf.struct_layout(t).decoder()
        except BtfError:
            return bytes
        return lambda b: dec(b, 0)
    return bytes
