"""Maps of a loaded object: lookup, update, delete, iteration.

Keys and values are bytes of exactly the map's key/value size, or ints (packed
little-endian to that size).  ``lookup`` returns bytes; the typed view
(:attr:`Map.typed`) decodes values through the object's BTF: integers become
ints and structs become records.  Per-CPU maps return one value per possible
CPU.
"""
from __future__ import annotations

import errno as _errno
from typing import TYPE_CHECKING, Any, Callable, Iterator, List, Optional, Tuple, Union

from . import _libbpf
from ._libbpf import ffi, lib
from .errors import BadArgumentError, BadTypeError, LoadError

if TYPE_CHECKING:
    from .object import Object
    from .ringbuf import RingBuffer

__all__ = ["Map", "MAP_TYPES"]

MAP_TYPES = {
    1: "hash", 2: "array", 3: "prog_array", 4: "perf_event_array", 5: "percpu_hash",
    6: "percpu_array", 7: "stack_trace", 8: "cgroup_array", 9: "lru_hash",
    10: "lru_percpu_hash", 11: "lpm_trie", 12: "array_of_maps", 13: "hash_of_maps",
    14: "devmap", 15: "sockmap", 16: "cpumap", 17: "xskmap", 18: "sockhash",
    19: "cgroup_storage", 20: "reuseport_sockarray", 21: "percpu_cgroup_storage",
    22: "queue", 23: "stack", 24: "sk_storage", 25: "devmap_hash", 26: "struct_ops",
    27: "ringbuf", 28: "inode_storage", 29: "task_storage", 30: "bloom_filter",
    31: "user_ringbuf", 32: "cgrp_storage",
}
PERCPU = {5, 6, 10, 21}
RINGBUF = 27
Key = Union[bytes, bytearray, memoryview, int]

_ncpus: Optional[int] = None


def possible_cpus() -> int:
    global _ncpus
    if _ncpus is None:
        n = lib.libbpf_num_possible_cpus()
        if n <= 0:
            raise LoadError("count possible CPUs", -n)
        _ncpus = int(n)
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
        rc = lib.bpf_map_lookup_elem(self.fd, k, buf)
        if rc < 0:
            if -rc == _errno.ENOENT:
                return None
            raise LoadError(f"lookup in map {self.name}", -rc)
        return self._split(buf)

    def __getitem__(self, key: Key) -> Union[bytes, List[bytes]]:
        v = self.lookup(key)
        if v is None:
            raise KeyError(key)
        return v

    def update(self, key: Key, value: Any, flags: int = 0) -> None:
        """Set ``key`` to ``value``. Per-CPU maps take one value per CPU (a
        list), or a single value for every CPU."""
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
        rc = lib.bpf_map_update_elem(self.fd, k, v, flags)
        if rc < 0:
            if -rc == _errno.E2BIG:
                raise BadArgumentError(f"map {self.name} is full ({self.max_entries} entries)")
            if -rc == _errno.EINVAL and self.type in (2, 6) and isinstance(key, int):
                raise BadArgumentError(f"index {key} out of range for array map {self.name} "
                                       f"({self.max_entries} entries)")
            raise LoadError(f"update map {self.name}", -rc)

    def __setitem__(self, key: Key, value: Any) -> None:
        self.update(key, value)

    def delete(self, key: Key) -> bool:
        """Delete ``key``; False if it was not there."""
        self._not_ring()
        k = _encode("key", key, self.key_size)
        rc = lib.bpf_map_delete_elem(self.fd, k)
        if rc < 0:
            if -rc == _errno.ENOENT:
                return False
            if -rc == _errno.EINVAL and self.type in (2, 6):
                raise BadArgumentError(f"array map {self.name}: entries cannot be deleted")
            raise LoadError(f"delete from map {self.name}", -rc)
        return True

    def __delitem__(self, key: Key) -> None:
        if not self.delete(key):
            raise KeyError(key)

    def keys(self) -> Iterator[bytes]:
        self._not_ring()
        cur = ffi.NULL
        nxt = ffi.new("char[]", max(1, self.key_size))
        while True:
            rc = lib.bpf_map_get_next_key(self.fd, cur, nxt)
            if rc < 0:
                if -rc == _errno.ENOENT:
                    return
                raise LoadError(f"iterate map {self.name}", -rc)
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

    def pin(self, path: str) -> None:
        """Pin the map in bpffs (mode 0600) so it outlives this process;
        ``os.unlink(path)`` unpins it."""
        import os

        from .link import check_pin_path
        check_pin_path(path)
        fd = self.fd
        old = os.umask(0o177)   # the kernel creates the pin with 0600 & ~umask
        try:
            rc, err, cap = _libbpf.call_with_log(lib.bpf_obj_pin, fd, path.encode())
        finally:
            os.umask(old)
        if rc < 0:
            raise LoadError(f"pin map {self.name} at {path}", -rc, cap.last_line())
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

    def ring_buffer(self, *, event: Optional[str] = None,
                    decoder: Optional[Callable[[Any, int], Any]] = None,
                    **kw: Any) -> "RingBuffer":
        """Open this ring-buffer map for reading (see pytracers.ringbuf)."""
        from .ringbuf import RingBuffer
        if self.type != RINGBUF:
            raise BadArgumentError(f"map {self.name} is a {self.type_name} map, not a ring buffer")
        # With event= and no decoder, RingBuffer decodes through the event's
        # BTF layout (and its batch reader takes the layout's numpy dtype).
        rb = RingBuffer(self, decoder=decoder, event=event, **kw)
        self.object._adopt(rb)
        return rb


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
