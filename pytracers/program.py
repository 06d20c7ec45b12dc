"""Loaded programs: attach them (one method per probe kind) and test-run them."""
from __future__ import annotations

import errno
import os
import struct
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

from . import _errmap, _libbpf, kinds, tracefs
from ._libbpf import checked
from ._libbpf import ffi, lib
from .elf.inspect import section_target, split_tracepoint
from .errors import (ENOTSUPP, BadArgumentError, BadTypeError, NotSupportedError, TestRunError,
                     errno_name)
from .link import Link, LinkSet

if TYPE_CHECKING:
    from .object import Object

__all__ = ["Program", "TestRun"]


class TestRun:
    """Result of BPF_PROG_TEST_RUN."""

    __match_args__ = ("retval", "duration_ns", "data_out")
    __slots__ = __match_args__
    __test__ = False  # not a pytest test class

    def __init__(self, retval: int, duration_ns: int, data_out: bytes = b"") -> None:
        self.retval = retval
        self.duration_ns = duration_ns
        self.data_out = data_out

    def __repr__(self) -> str:
        return (f"{type(self).__qualname__}(retval={self.retval!r}, "
                f"duration_ns={self.duration_ns!r}, data_out={self.data_out!r})")

    def __eq__(self, other: Any) -> bool:     # field-wise, as the dataclass it was
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool((self.retval, self.duration_ns, self.data_out)
                    == (other.retval, other.duration_ns, other.data_out))

    __hash__ = None     # type: ignore[assignment]  # mutable: unhashable


class Program:
    """A program of a loaded :class:`~pytracers.object.Object`."""

    def __init__(self, obj: "Object", ptr: Any, name: str, section: str,
                 attach_target: Optional[str]) -> None:
        self.object = obj          # a program keeps its object alive
        self._ptr = ptr
        self.name = name
        self.section = section
        self.kind = kinds.kind_of_section(section)
        self.attach_target = attach_target

    @property
    def fd(self) -> int:
        self.object._check()
        return int(lib.bpf_program__fd(self._ptr))

    def __repr__(self) -> str:
        return f"<Program {self.name} {self.section!r}>"

    # ---- attach ------------------------------------------------------------
    def _link(self, ptr: Any, err: int, cap: Any, kind: str, target: str) -> Link:
        if ptr == ffi.NULL:
            raise _errmap.attach_error(kind, target, err, cap.last_line())
        link = Link(ptr, self, kind, target)
        self.object._adopt(link)
        return link

    def _refuse_duplicate(self, kind: str, target: str) -> None:
        """A second link to the same target would deliver every event twice
        (the kernel refuses some kinds with a bare EEXIST)."""
        for other in list(getattr(self.object, "_children", {}).values()):
            if isinstance(other, Link) and other.program is self and other.kind == kind \
                    and other.target == target and not other.closed:
                raise BadArgumentError(f"program {self.name!r} is already attached to {target} "
                                       f"({kind}); close that link first, or attach to "
                                       "another target")

    # kinds.ProbeKind.attach -> the method that attaches a program of that style
    # to a target given as one string (attach() below).
    ATTACH = {
        kinds.ATTACH_TRACEPOINT: "_attach_tracepoint_spec",
        kinds.ATTACH_RAW_TRACEPOINT: "attach_raw_tracepoint",
        kinds.ATTACH_FUNCTION: "attach_kprobe",
        kinds.ATTACH_FUNCTION_GLOB: "_attach_glob",
        kinds.ATTACH_BTF: "_attach_fixed",
        kinds.ATTACH_PERF_EVENT: "attach_perf_event",
    }

    def attach(self, target: Optional[str] = None) -> Union[Link, LinkSet]:
        """Attach by kind (see :mod:`pytracers.kinds`): tracepoints take
        "category/name" (or "category:name"), raw tracepoints a name, kprobes a
        function, multi-kprobes a glob; BTF-based programs (tp_btf, fentry,
        fexit, fmod_ret) attach to the target fixed at load, perf_event programs
        to an event on every CPU at 99 Hz (a :class:`LinkSet`).  Without
        ``target``, the one written in the program's section."""
        pk = kinds.KINDS.get(self.kind)
        if pk is None:
            raise BadArgumentError(f"pytracers cannot attach {self.kind!r} programs "
                                   f"({self.section})")
        target = target if target is not None else section_target(self.section)
        if not target and pk.attach == kinds.ATTACH_PERF_EVENT:
            target = "auto"     # the sampling event of perf.resolve_event
        method = getattr(self, self.ATTACH[pk.attach])
        if not target and not pk.target_fixed_at_load:
            raise BadArgumentError(f"{self.name}: a {pk.name} program needs a target: "
                                   f"{pk.target}")
        link: Union[Link, LinkSet] = method(target)
        return link

    def _attach_tracepoint_spec(self, target: str) -> Link:
        try:
            cat, name = split_tracepoint(target)
        except ValueError:
            raise BadArgumentError(f"tracepoint target must be 'category/name' or "
                                   f"'category:name', got {target!r}") from None
        return self.attach_tracepoint(cat, name)

    def _attach_glob(self, pattern: str) -> Link:
        return self.attach_kprobe_multi(pattern=pattern)

    def _attach_fixed(self, target: Optional[str]) -> Link:
        if target and self.attach_target and target != self.attach_target:
            raise BadArgumentError(f"{self.name} was loaded for {self.attach_target}; "
                                   "a BTF-based program's target is fixed before load")
        return self.attach_trace()

    def _check_kind(self, *kinds: str) -> None:
        if self.kind not in kinds:
            raise BadArgumentError(f"program {self.name!r} is a {self.kind} program "
                                   f"(section {self.section!r}), not {' or '.join(kinds)}")

    def attach_tracepoint(self, category: str, name: str) -> Link:
        self._check_kind(kinds.TP)
        self.object._check()
        for v in (category, name):
            if not isinstance(v, str) or not v or "/" in v or ".." in v:
                raise BadArgumentError(f"bad tracepoint name part {v!r}")
        tracefs.root()   # libbpf reads the tracepoint id from tracefs
        tracefs.require_tracepoint(category, name)
        self._refuse_duplicate(kinds.TP, f"{category}:{name}")
        ptr, err, cap = _libbpf.call_with_log(lib.bpf_program__attach_tracepoint,
                                              self._ptr, category.encode(), name.encode())
        return self._link(ptr, err, cap, kinds.TP, f"{category}:{name}")

    def attach_raw_tracepoint(self, name: str) -> Link:
        self._check_kind(kinds.RAW_TP)
        self.object._check()
        if not isinstance(name, str) or not name:
            raise BadTypeError("raw tracepoint name must be a non-empty str")
        self._refuse_duplicate(kinds.RAW_TP, name)
        ptr, err, cap = _libbpf.call_with_log(lib.bpf_program__attach_raw_tracepoint,
                                              self._ptr, name.encode())
        return self._link(ptr, err, cap, kinds.RAW_TP, name)

    def attach_kprobe(self, function: str, *, retprobe: Optional[bool] = None) -> Link:
        self._check_kind(*kinds.KPROBE_KINDS)
        self.object._check()
        if not isinstance(function, str) or not function:
            raise BadTypeError("kprobe target must be a non-empty function name")
        if retprobe is None:
            retprobe = kinds.get(self.kind).retprobe
        kind = kinds.KRETPROBE if retprobe else kinds.KPROBE
        self._refuse_duplicate(kind, function)
        reason = _errmap.no_kprobes_reason()
        if reason:  # libbpf would fail with a bare ENOENT
            raise NotSupportedError(kind, reason, min_kernel=kinds.get(kind).min_kernel,
                                    hint="use fentry/fexit where BPF trampolines work, "
                                         "or a tracepoint")
        ptr, err, cap = _libbpf.call_with_log(lib.bpf_program__attach_kprobe,
                                              self._ptr, retprobe, function.encode())
        return self._link(ptr, err, cap, kind, function)

    def attach_kprobe_multi(self, pattern: Optional[str] = None, *,
                            functions: Optional[Sequence[str]] = None,
                            retprobe: Optional[bool] = None) -> Link:
        """Attach one multi-kprobe link to every function matching ``pattern``
        (a glob; needs tracefs' available_filter_functions) or listed in
        ``functions``."""
        self._check_kind(*kinds.MULTI_KINDS)
        self.object._check()
        if (pattern is None) == (functions is None):
            raise BadArgumentError("pass exactly one of pattern= or functions=")
        if not _libbpf.has("bpf_program__attach_kprobe_multi_opts"):
            raise NotSupportedError(kinds.KPROBE_MULTI, "the installed libbpf lacks "
                                    "bpf_program__attach_kprobe_multi_opts")
        if retprobe is None:
            retprobe = kinds.get(self.kind).retprobe
        opts = ffi.new("struct bpf_kprobe_multi_opts *")
        opts.sz = ffi.sizeof("struct bpf_kprobe_multi_opts")
        opts.retprobe = retprobe
        keep = []
        if functions is not None:
            if isinstance(functions, str) or not functions:
                raise BadArgumentError("functions= must be a non-empty list of names")
            keep = [ffi.new("char[]", f.encode()) for f in functions]
            syms = ffi.new("const char *[]", keep)
            opts.syms = syms
            opts.cnt = len(keep)
            target = ",".join(functions)
            cpattern = ffi.NULL
        else:
            assert pattern is not None
            tracefs.root()
            target = pattern
            cpattern = pattern.encode()
        ptr, err, cap = _libbpf.call_with_log(lib.bpf_program__attach_kprobe_multi_opts,
                                              self._ptr, cpattern, opts)
        del keep
        return self._link(ptr, err, cap, kinds.KRETPROBE_MULTI if retprobe else kinds.KPROBE_MULTI,
                          target)

    def attach_trace(self) -> Link:
        """Attach a BTF-based program (tp_btf, fentry, fexit, fmod_ret)."""
        self._check_kind(*kinds.BTF_TARGET_KINDS)
        self.object._check()
        target = self.attach_target or section_target(self.section) or "?"
        self._refuse_duplicate(self.kind, target)
        ptr, err, cap = _libbpf.call_with_log(lib.bpf_program__attach_trace, self._ptr)
        if ptr == ffi.NULL and self.kind in kinds.TRAMPOLINE_KINDS and err in (
                errno.EPERM, errno.EACCES, errno.EOPNOTSUPP, ENOTSUPP):
            raise _errmap.trampoline_refused(self.kind, err, cap.last_line())
        if ptr == ffi.NULL and self.kind in kinds.TRAMPOLINE_KINDS and err == errno.EBUSY:
            raise _errmap.untraceable(self.kind, target, err)
        return self._link(ptr, err, cap, self.kind, target)

    def attach_perf_event(self, event: str = "auto", *, frequency: int = 99,
                          cpus: Optional[Sequence[int]] = None, pid: int = -1) -> LinkSet:
        """Run this ``perf_event`` program at ``frequency`` Hz on each CPU of
        ``cpus`` (default: every online CPU), sampling ``event`` (see
        :mod:`pytracers.perf`: ``cpu-clock``, ``cycles``...; ``auto`` picks
        cycles where there is a PMU).  One perf event and one link per CPU,
        returned together as a :class:`~pytracers.link.LinkSet`."""
        from . import perf
        self._check_kind(kinds.PERF_EVENT)
        self.object._check()
        event = perf.resolve_event(event or "auto")
        target = f"{event}@{frequency}Hz"
        self._refuse_duplicate(kinds.PERF_EVENT, target)
        links = LinkSet()
        try:
            for cpu in (perf.online_cpus() if cpus is None else cpus):
                pfd = perf.open_sampling_event(event, frequency, cpu, pid)
                ptr, err, cap = _libbpf.call_with_log(lib.bpf_program__attach_perf_event,
                                                      self._ptr, pfd)
                if ptr == ffi.NULL:
                    os.close(pfd)
                # the link owns the perf event's fd from here (closing it closes the event)
                links.append(self._link(ptr, err, cap, kinds.PERF_EVENT, target))
        except BaseException:
            links.close()
            raise
        return links

    # ---- BPF_PROG_TEST_RUN ---------------------------------------------------
    def test_run(self, ctx: Union[bytes, Sequence[int], None] = None, *,
                 data: Optional[bytes] = None, repeat: int = 1,
                 data_out_size: int = 0) -> TestRun:
        """Run the program once (or ``repeat`` times) in the kernel.

        ``ctx``: bytes, or a sequence of u64 values (a raw tracepoint's args).
        """
        self.object._check()
        if not isinstance(repeat, int) or repeat < 1:
            raise BadArgumentError("repeat must be a positive int")
        opts = ffi.new("struct bpf_test_run_opts *")
        opts.sz = ffi.sizeof("struct bpf_test_run_opts")
        if self.kind == kinds.RAW_TP:
            # The kernel runs a raw_tp program exactly once and refuses any
            # nonzero repeat (net/bpf/test_run.c) with EINVAL.
            if repeat != 1:
                raise BadArgumentError("a raw_tp program test-runs once: call test_run() "
                                       "again instead of passing repeat")
            opts.repeat = 0
        else:
            opts.repeat = repeat
        keep = []
        if ctx is not None:
            if isinstance(ctx, (bytes, bytearray, memoryview)):
                raw = bytes(ctx)
            else:
                try:
                    raw = struct.pack(f"<{len(ctx)}Q", *[v & (2**64 - 1) for v in ctx])
                except (TypeError, struct.error):
                    raise BadTypeError("ctx must be bytes or a sequence of ints") from None
            cbuf = ffi.new("char[]", raw)
            keep.append(cbuf)
            opts.ctx_in = cbuf
            opts.ctx_size_in = len(raw)
        if data is not None:
            dbuf = ffi.new("char[]", bytes(data))
            keep.append(dbuf)
            opts.data_in = dbuf
            opts.data_size_in = len(data)
        out = None
        if data_out_size:
            out = ffi.new("char[]", data_out_size)
            opts.data_out = out
            opts.data_size_out = data_out_size
        checked(lib.bpf_prog_test_run_opts, self.fd, opts, what=f"test run of {self.name!r}",
                error=TestRunError, refine=lambda err, log: self._test_run_refused(err, ctx))
        return TestRun(int(opts.retval), int(opts.duration),
                       bytes(ffi.buffer(out, opts.data_size_out)) if out is not None else b"")

    def _test_run_refused(self, err: int, ctx: Any) -> Optional[NotSupportedError]:
        # Without a context, a refusal means the kernel cannot test-run this
        # program type (with one, the context may be what it refused).
        if err in (errno.EOPNOTSUPP, ENOTSUPP, errno.EINVAL) and ctx is None:
            return NotSupportedError("BPF_PROG_TEST_RUN for " + self.kind,
                                     f"the kernel refused it ({errno_name(err)})", errno=err)
        return None
