"""Objects: open a .bpf.o, configure it, load it.

Phases are types (as in libbpf-rs): :func:`open` returns an
:class:`OpenObject`, where everything that must be decided before load is
possible -- which programs load (autoload), attach targets of BTF-based
programs, read-only configuration (``const volatile`` globals), map sizes.
:meth:`OpenObject.load` consumes it and returns a :class:`Object`, whose
programs can be attached and whose maps can be read; a loaded object cannot be
misconfigured because it has no such methods.
"""
from __future__ import annotations

import errno
import os
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Union

from . import _errmap, _libbpf, kinds
from .kernel import host
from ._libbpf import checked
from ._libbpf import ffi, lib
from ._resource import Resource
from .elf.inspect import ObjectInfo, Variable, inspect, read_object_bytes, section_target
from .errors import (BadArgumentError, BadTypeError, ClosedError, InvalidObjectError, LoadError,
                     PermissionDeniedError, PytracersError, TargetNotFoundError, os_error_text)
from .maps import MapType

__all__ = ["open", "OpenObject", "OpenProgram", "OpenMap", "Object", "Config"]

PathLike = Union[str, "os.PathLike[str]"]
LOG_BUF_SIZE = 1 << 20


class _Handle(Resource):
    """Owns the ``struct bpf_object *`` shared by the open and loaded phases."""

    _what = "BPF object"

    def __init__(self, ptr: Any) -> None:
        self.ptr = ptr
        self.keep: Any = None
        self._own(lib.bpf_object__close, ptr)


def _names(items: Any) -> str:
    return ", ".join(sorted(items)) or "(none)"


class _View(Mapping[str, Any]):
    """Read-only name -> child mapping whose KeyError lists the choices."""

    def __init__(self, kind: str, items: Dict[str, Any],
                 absent: Optional[Dict[str, str]] = None) -> None:
        self._kind = kind
        self._items = items
        self._absent = absent or {}    # names that exist but are not here, and why

    def __getitem__(self, name: str) -> Any:
        try:
            return self._items[name]
        except KeyError:
            if name in self._absent:
                e = TargetNotFoundError(self._kind, name)
                e.args = (f"program {name!r} {self._absent[name]}: it is in the object but "
                          "was not loaded, so it cannot be attached or run",)
                raise e from None
            import difflib
            raise TargetNotFoundError(self._kind, name,
                                      difflib.get_close_matches(name, list(self._items)),
                                      detail="this object has: " + _names(self._items)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __contains__(self, name: object) -> bool:
        # Mapping's default goes through __getitem__, whose error is not a KeyError
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"<{self._kind}s {list(self._items)}>"


def open(path: PathLike, *, allow_insecure: bool = False) -> "OpenObject":  # noqa: A001
    """Open an eBPF object file (checked with pyelftools first) for configuration."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise BadTypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    spath = os.fsdecode(path)
    data = read_object_bytes(spath, allow_insecure=allow_insecure)
    info = inspect(spath, data)
    # Opening from memory means libbpf parses exactly the bytes we checked.
    buf = ffi.from_buffer(data)
    opts = ffi.new("struct bpf_object_open_opts *")
    opts.sz = ffi.sizeof("struct bpf_object_open_opts")
    cname = ffi.new("char[]", os.path.basename(spath).split(".")[0].encode()[:60] or b"obj")
    opts.object_name = cname
    ptr = checked(lib.bpf_object__open_mem, buf, len(data), opts, what=f"open {spath}",
                  error=LoadError, refine=lambda err, log: InvalidObjectError(
                      spath, f"libbpf could not open it ({os_error_text(err)})", log.last_line()))
    handle = _Handle(ptr)
    handle.keep = (data, buf)  # libelf reads the buffer in place until load/close
    return OpenObject(handle, info, data)


class _OpenState:
    """What an open object's children (programs, maps, config) need of it: the
    handle while it is open, and the inspection.  They hold this, not the
    :class:`OpenObject`, so an open object is never in a reference cycle:
    dropping it (or a failed load) frees it at once, without the cycle
    collector."""

    def __init__(self, handle: _Handle, info: ObjectInfo) -> None:
        self.handle: Optional[_Handle] = handle
        self.info = info
        self.path = info.path

    def _check_open(self) -> None:
        if self.handle is None or self.handle.closed:
            raise ClosedError(f"open object {self.path} (already loaded or closed)")

    def _internal_map(self, section: str) -> Any:
        assert self.handle is not None
        m = lib.bpf_object__next_map(self.handle.ptr, ffi.NULL)
        while m != ffi.NULL:
            if lib.bpf_map__is_internal(m) and (_libbpf.cstr(lib.bpf_map__name(m)) or "").endswith(section):
                return m
            m = lib.bpf_object__next_map(self.handle.ptr, m)
        raise TargetNotFoundError("data section", section)


class Config:
    """Values of the object's globals set before load: ``const volatile``
    configuration (.rodata), and the initial values of .data and .bss
    variables.  After load use :attr:`Object.globals`."""

    def __init__(self, obj: "_OpenState") -> None:
        self._obj = obj
        self.pending_bss: Dict[str, bytes] = {}   # written after load (see OpenObject.load)

    def _var(self, name: str) -> Variable:
        v = self._obj.info.variables.get(name)
        if v is None:
            import difflib
            raise TargetNotFoundError("global variable", name,
                                      difflib.get_close_matches(name, list(self._obj.info.variables)),
                                      detail="variables: " + _names(self._obj.info.variables))
        return v

    def _buffer(self, v: Variable) -> Any:
        self._obj._check_open()
        m = self._obj._internal_map(v.section)
        size = ffi.new("size_t *")
        what, why = f"configure {v.name}", f"no initial data for {v.section}"
        p = checked(lib.bpf_map__initial_value, m, size, what=what, error=LoadError,
                    refine=lambda err, log: LoadError(what, err, why))
        if v.offset + v.size > size[0]:
            raise LoadError(what, errno.EINVAL, why)
        return ffi.buffer(ffi.cast("char *", p) + v.offset, v.size)

    def __contains__(self, name: object) -> bool:
        return name in self._obj.info.variables

    def __getitem__(self, name: str) -> bytes:
        return bytes(self._buffer(self._var(name)))

    def get_int(self, name: str, signed: bool = False) -> int:
        return int.from_bytes(self[name], "little", signed=signed)

    def __setitem__(self, name: str, value: Union[int, bool, str, bytes]) -> None:
        v = self._var(name)
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int):
            if v.size not in (1, 2, 4, 8):
                raise BadTypeError(f"{name} is {v.size} bytes, not an integer; pass bytes or str")
            lo, hi = -(1 << (8 * v.size - 1)), (1 << (8 * v.size)) - 1
            if not lo <= value <= hi:
                raise BadArgumentError(f"{value} does not fit {name} ({v.size} bytes)")
            raw = value.to_bytes(v.size, "little", signed=value < 0)
        elif isinstance(value, (str, bytes)):
            raw = value.encode() if isinstance(value, str) else value
            if len(raw) >= v.size:
                raise BadArgumentError(f"{name} holds at most {v.size - 1} bytes "
                                       f"(plus a NUL); got {len(raw)}")
            raw = raw.ljust(v.size, b"\0")
        else:
            raw = self._typed(v, value)
        self._buffer(v)[:] = raw
        if v.section.startswith(".bss"):
            # libbpf does not copy .bss from its initial buffer at load (the
            # kernel zero-fills it): the value is written after load.
            self.pending_bss[name] = raw

    def _typed(self, v: Variable, value: Any) -> bytes:
        """A float, array or struct value, encoded through the object's BTF."""
        from .btf import Btf
        from .globalvars import VarCodec, var_type_id
        btf = Btf.from_bytes(self._obj.info.btf) if self._obj.info.btf else None
        codec = VarCodec(v.name, v.size, btf, var_type_id(btf, v.section, v.name) if btf else 0)
        if codec.kind not in ("float", "array", "struct"):
            raise BadTypeError(f"{v.name} takes an int, str or bytes, not {type(value).__name__}")
        return codec.encode(value, bytes(self._buffer(v)))


class OpenProgram:
    """A program of an :class:`OpenObject`: choose whether it loads and where it attaches."""

    def __init__(self, obj: "_OpenState", ptr: Any) -> None:
        self._obj = obj
        self._ptr = ptr
        self.name: str = _libbpf.cstr(lib.bpf_program__name(ptr)) or ""
        self.section: str = _libbpf.cstr(lib.bpf_program__section_name(ptr)) or ""
        self.kind: str = kinds.kind_of_section(self.section)
        self.attach_target: Optional[str] = None

    @property
    def autoload(self) -> bool:
        self._obj._check_open()
        return bool(lib.bpf_program__autoload(self._ptr))

    @autoload.setter
    def autoload(self, value: bool) -> None:
        self._obj._check_open()
        if not isinstance(value, bool):
            raise BadTypeError("autoload must be True or False")
        checked(lib.bpf_program__set_autoload, self._ptr, value,
                what=f"set autoload of program {self.name!r}", error=LoadError)

    def set_attach_target(self, function: str) -> None:
        """Set the kernel function a fentry/fexit/fmod_ret program attaches to."""
        self._obj._check_open()
        if not isinstance(function, str) or not function:
            raise BadTypeError("attach target must be a non-empty function name")
        # lsm, freplace and iter are BTF-based program types of no probe kind
        if self.kind not in kinds.BTF_TARGET_KINDS + ("lsm", "freplace", "iter"):
            raise BadArgumentError(f"program {self.name!r} is a {self.kind} program; only "
                                   "BTF-based programs (fentry, fexit, fmod_ret, tp_btf) take "
                                   "a target before load -- attach others with attach()")
        from .kernel import symbols
        if self.kind in kinds.TRAMPOLINE_KINDS and symbols.function_exists(function) is False:
            # Refused here, not by libbpf: libbpf 1.1 then opens every kernel
            # module's BTF and only closes those fds at load, so an object
            # closed without loading would leak one fd per module.
            raise TargetNotFoundError("kernel function", function,
                                      symbols.function_suggestions(function),
                                      detail="in neither the kernel's BTF nor kallsyms")
        checked(lib.bpf_program__set_attach_target, self._ptr, 0, function.encode(),
                what=f"set the attach target of {self.name!r}", error=LoadError,
                refine=lambda err, log: _errmap.load_error(self.name, self.kind, err, "",
                                                           log.last_line(), function))
        self.attach_target = function

    def __repr__(self) -> str:
        return f"<OpenProgram {self.name} {self.section!r}>"


class OpenMap:
    """A map of an :class:`OpenObject`: its type, key and value sizes, flags
    and size (``max_entries``) can be changed before load."""

    def __init__(self, obj: "_OpenState", ptr: Any) -> None:
        self._obj = obj
        self._ptr = ptr
        self.name: str = _libbpf.cstr(lib.bpf_map__name(ptr)) or ""
        self.type: int = lib.bpf_map__type(ptr)

    @property
    def max_entries(self) -> int:
        self._obj._check_open()
        return int(lib.bpf_map__max_entries(self._ptr))

    @max_entries.setter
    def max_entries(self, n: int) -> None:
        self._obj._check_open()
        if not isinstance(n, int) or isinstance(n, bool):
            raise BadTypeError("max_entries must be an int")
        if self.type == MapType.RINGBUF:
            page = os.sysconf("SC_PAGE_SIZE")
            if n < page or n & (n - 1):
                raise BadArgumentError(f"ring buffer size must be a power of two and at least "
                                       f"one page ({page} bytes); got {n}")
        elif n <= 0 or n >= 1 << 32:
            raise BadArgumentError(f"max_entries must be between 1 and 2**32-1, got {n}")
        checked(lib.bpf_map__set_max_entries, self._ptr, n, what=f"resize map {self.name!r}",
                error=LoadError, refine=lambda err, log: BadArgumentError(
                    f"cannot resize map {self.name}: {os_error_text(err)}"))

    @property
    def autocreate(self) -> bool:
        """Whether load creates this map (off: programs using it cannot load)."""
        self._obj._check_open()
        return bool(lib.bpf_map__autocreate(self._ptr))

    @autocreate.setter
    def autocreate(self, value: bool) -> None:
        self._obj._check_open()
        if not isinstance(value, bool):
            raise BadTypeError("autocreate must be True or False")
        checked(lib.bpf_map__set_autocreate, self._ptr, value,
                what=f"change autocreate of map {self.name!r}", error=LoadError,
                refine=lambda err, log: BadArgumentError(
                    f"cannot change autocreate of map {self.name}: {os_error_text(err)}"))

    def _set(self, fn: Any, value: int, what: str, limit: int = 1 << 32) -> None:
        self._obj._check_open()
        if not isinstance(value, int) or isinstance(value, bool):
            raise BadTypeError(f"{what} must be an int")
        if not 0 <= value < limit:
            raise BadArgumentError(f"{what} of map {self.name} must be in [0, {limit}); "
                                   f"got {value}")
        checked(fn, self._ptr, value, what=f"set the {what} of map {self.name!r}",
                error=LoadError, refine=lambda err, log: BadArgumentError(
                    f"cannot set the {what} of map {self.name}: {os_error_text(err)}"))

    @property
    def map_type(self) -> int:
        """The map's type (a :class:`~pytracers.maps.MapType`); settable before load."""
        return int(lib.bpf_map__type(self._ptr))

    @map_type.setter
    def map_type(self, value: int) -> None:
        self._set(lib.bpf_map__set_type, int(value) if isinstance(value, MapType) else value,
                  "type")
        self.type = int(lib.bpf_map__type(self._ptr))

    @property
    def key_size(self) -> int:
        return int(lib.bpf_map__key_size(self._ptr))

    @key_size.setter
    def key_size(self, n: int) -> None:
        self._set(lib.bpf_map__set_key_size, n, "key size")

    @property
    def value_size(self) -> int:
        return int(lib.bpf_map__value_size(self._ptr))

    @value_size.setter
    def value_size(self, n: int) -> None:
        self._set(lib.bpf_map__set_value_size, n, "value size")

    @property
    def map_flags(self) -> int:
        """The map's creation flags (BPF_F_*); settable before load."""
        return int(lib.bpf_map__map_flags(self._ptr))

    @map_flags.setter
    def map_flags(self, flags: int) -> None:
        self._set(lib.bpf_map__set_map_flags, flags, "flags")

    def __repr__(self) -> str:
        return f"<OpenMap {self.name} type={self.type}>"


class OpenObject:
    """An opened, not yet loaded object. See the module docstring."""

    def __init__(self, handle: _Handle, info: ObjectInfo, data: bytes) -> None:
        self._state = state = _OpenState(handle, info)
        self.info = info
        self.path = info.path
        self._data = data  # libbpf may keep pointers into the buffer until load
        progs: Dict[str, OpenProgram] = {}
        p = lib.bpf_object__next_program(handle.ptr, ffi.NULL)
        while p != ffi.NULL:
            op = OpenProgram(state, p)
            progs[op.name] = op
            p = lib.bpf_object__next_program(handle.ptr, p)
        maps: Dict[str, OpenMap] = {}
        m = lib.bpf_object__next_map(handle.ptr, ffi.NULL)
        while m != ffi.NULL:
            om = OpenMap(state, m)
            maps[om.name] = om
            m = lib.bpf_object__next_map(handle.ptr, m)
        self.programs: Mapping[str, OpenProgram] = _View("program", progs)
        self.maps: Mapping[str, OpenMap] = _View("map", maps)
        self.config = Config(state)

    @property
    def _handle(self) -> Optional[_Handle]:
        return self._state.handle

    @_handle.setter
    def _handle(self, handle: Optional[_Handle]) -> None:
        self._state.handle = handle

    def _check_open(self) -> None:
        self._state._check_open()

    def _internal_map(self, section: str) -> Any:
        return self._state._internal_map(section)

    def only(self, *names: str) -> "OpenObject":
        """Autoload exactly the named programs (others are not loaded)."""
        for n in names:
            self.programs[n]  # raises TargetNotFoundError with suggestions
        for name, prog in self.programs.items():
            prog.autoload = name in names
        return self

    def load(self) -> "Object":
        """Load into the kernel; the open object is consumed (even on failure).

        A failure names the program or map that failed and quotes what libbpf
        said; the verifier-log buffers (1 MiB per program) are freed before
        the exception propagates (nothing the exception holds refers to them)."""
        self._check_open()
        handle = self._handle
        assert handle is not None
        self._handle = None        # consumed, whether the load succeeds or not
        logs: Dict[str, Any] = {}
        try:
            for prog in self.programs.values():
                if lib.bpf_program__autoload(prog._ptr):
                    buf = ffi.new("char[]", LOG_BUF_SIZE)
                    checked(lib.bpf_program__set_log_buf, prog._ptr, buf, LOG_BUF_SIZE,
                            what=f"give program {prog.name!r} a verifier log", error=LoadError)
                    logs[prog.name] = buf
            res, err, cap = _libbpf.call_with_log(lib.bpf_object__load, handle.ptr)
            failure = self._load_failure(-res, logs, cap) if res < 0 else None
        except BaseException:
            handle.close()
            logs.clear()
            raise
        if failure is not None:
            handle.close()       # before raising: libbpf's buffers and fds go now
            logs.clear()         # and so do ours (the frame below dies with the raise)
            try:
                raise failure
            finally:
                failure = None   # no cycle: exception -> traceback -> this frame -> exception
        logs_kept = set(logs)
        logs.clear()
        loaded = Object(handle, self.info, self.path,
                        {n: p for n, p in self.programs.items() if n in logs_kept},
                        unloaded=[n for n in self.programs if n not in logs_kept])
        try:
            for name, raw in self.config.pending_bss.items():
                loaded.globals[name] = raw
        except BaseException:
            loaded.close()
            raise
        return loaded

    def _load_failure(self, err: int, logs: Dict[str, Any], cap: Any) -> PytracersError:
        # Which program or map failed?  libbpf names it in its messages;
        # failing that, the program whose log buffer the kernel wrote to.
        failed = None
        for line in cap.lines:
            for name in logs:
                if f"prog '{name}'" in line and ("failed" in line or "load" in line):
                    failed = name
                    break
            if failed is not None:
                break
        if failed is None:
            mapped = _errmap.map_create_failure(self.path, err, cap.lines)
            if mapped is not None:
                return mapped
        if failed is None:
            for name, buf in logs.items():
                if buf[0] != b"\0":
                    failed = name
        if failed is None:
            if err in (errno.EPERM, errno.EACCES):   # refused before any program loaded
                missing = host.missing_bpf_caps()
                if missing:
                    return PermissionDeniedError(f"load {self.path}", missing, errno=err,
                                                 detail="run as root or grant the capability")
            return LoadError(f"load {self.path}", err, _errmap.quote(cap.lines))
        prog = self.programs[failed]
        log = ffi.string(logs[failed]).decode("utf-8", "replace")
        said = _errmap.quote(cap.lines, f"prog '{failed}'")
        exc = _errmap.load_error(failed, prog.kind, err, log, said,
                                 prog.attach_target or section_target(prog.section))
        if not hasattr(exc, "program"):
            exc.program = failed   # type: ignore[attr-defined]
        return exc

    def close(self) -> None:
        """Drop the object without loading it. Safe twice."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "OpenObject":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self._handle is not None else "consumed"
        return f"<OpenObject {self.path} {state}>"


class Object(Resource):
    """A loaded object: its programs (attachable) and maps (readable)."""

    _what = "BPF object"

    def __init__(self, handle: _Handle, info: ObjectInfo, path: str,
                 loaded: Dict[str, OpenProgram], unloaded: Sequence[str] = ()) -> None:
        from .maps import Map
        from .program import Program
        self._handle = handle
        self._own(handle.close)
        self.info = info
        self.path = path
        self._btf: Any = None
        self._globals: Any = None
        self.programs: Mapping[str, Program] = _View(
            "loaded program", {n: Program(self, p._ptr, p.name, p.section, p.attach_target)
                               for n, p in loaded.items()},
            absent={n: "not loaded (autoload was off)" for n in unloaded})
        maps: Dict[str, Map] = {}
        m = lib.bpf_object__next_map(handle.ptr, ffi.NULL)
        while m != ffi.NULL:
            mp = Map._from_object(self, m)
            maps[mp.name] = mp
            m = lib.bpf_object__next_map(handle.ptr, m)
        self.maps: Mapping[str, Map] = _View("map", maps)

    def _close_children(self, children: Any) -> None:
        # links first, the perf-event ones together (their detach waits for
        # RCU grace periods), then the rest, last adopted first
        from .link import close_together
        close_together(list(reversed(children)))

    @property
    def globals(self) -> Any:
        """The object's global variables, typed, readable and (outside .rodata)
        writable: a :class:`pytracers.globalvars.Globals`."""
        self._check()
        if self._globals is None or self._globals.closed:
            from .globalvars import Globals
            self._globals = Globals(self)
            self._adopt(self._globals)
        return self._globals

    @property
    def btf(self) -> Any:
        """The object's own BTF (pytracers.btf.Btf), parsed lazily."""
        if self._btf is None:
            from .btf import Btf
            self._btf = Btf.from_bytes(self.info.btf)
        return self._btf

    def attach_all(self) -> Any:
        """Attach every loaded program whose section says where it goes, as
        libbpf's auto-attach does; returns a :class:`~pytracers.program.AttachedAll`
        (``.links`` by program name, ``.skipped`` with the reason for each
        program left alone: no target in its section, or a perf event or
        cgroup only the caller has)."""
        from .program import attach_all
        self._check()
        return attach_all(list(self.programs.values()))

    def ring_buffer(self, map_name: str = "events", *, event: Any = None,
                    **kw: Any) -> Any:
        """A :class:`~pytracers.ringbuf.RingBuffer` on map ``map_name``, decoding
        records as ``event``: a struct name in the object's BTF, or -- for a
        struct clang left out of BTF -- its C declaration, a numpy dtype or a
        ctypes.Structure (see :mod:`pytracers.btf.foreign`)."""
        return self.maps[map_name].ring_buffer(event=event, **kw)

    def perf_buffer(self, map_name: str = "events", *, event: Any = None,
                    **kw: Any) -> Any:
        """A :class:`~pytracers.perfbuf.PerfBuffer` on the perf-event-array map
        ``map_name`` (per-CPU rings; ``pages=``, ``wakeup_events=``,
        ``wakeup_bytes=``), decoding samples as ``struct <event>`` from the
        object's BTF when ``event`` is given."""
        return self.maps[map_name].perf_buffer(event=event, **kw)

    def output(self, map_name: str = "events", *, event: Any = None,
               **kw: Any) -> Any:
        """The reader of the output map ``map_name``, whichever kind it is: a
        :class:`~pytracers.ringbuf.RingBuffer` for a ``BPF_MAP_TYPE_RINGBUF``,
        a :class:`~pytracers.perfbuf.PerfBuffer` for a
        ``BPF_MAP_TYPE_PERF_EVENT_ARRAY``; both have the same reading API.
        Keyword arguments go to that reader (the perf buffer's ``pages=`` and
        ``wakeup_*=`` only to it)."""
        m = self.maps[map_name]
        if m.type == MapType.PERF_EVENT_ARRAY:
            return m.perf_buffer(event=event, **kw)
        if m.type == MapType.RINGBUF:
            perf_only = sorted(set(kw) & {"pages", "wakeup_events", "wakeup_bytes"})
            if perf_only:
                raise BadArgumentError(f"map {m.name} is a ring buffer: {', '.join(perf_only)} "
                                       "only apply to perf buffers (a ring's size is set on "
                                       "the open object: maps[name].max_entries)")
            return m.ring_buffer(event=event, **kw)
        raise BadArgumentError(f"map {m.name} is a {m.type_name} map, not an output map "
                               "(a ring buffer or a perf event array)")

    def __repr__(self) -> str:
        return f"<Object {self.path}{' closed' if self.closed else ''}>"
