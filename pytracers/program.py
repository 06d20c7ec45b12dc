"""Loaded programs: attach them (one method per probe kind) and test-run them."""
from __future__ import annotations

import errno
import os
import struct
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

from . import _errmap, _libbpf, kinds
from .kernel import host, tracefs
from ._libbpf import checked
from ._libbpf import ffi, lib
from .elf.inspect import section_target, split_tracepoint
from .errors import (ENOTSUPP, BadArgumentError, BadTypeError, LinkError, NotSupportedError,
                     TargetNotFoundError, TestRunError, errno_name)
from .link import Link, LinkSet

if TYPE_CHECKING:
    from .object import Object

__all__ = ["Program", "TestRun", "AttachedAll", "attach_all", "parse_symbol_or_offset"]


def parse_symbol_or_offset(text: str) -> Union[str, int]:
    """A uprobe target's symbol part: ``0x1f0`` (or decimal digits) is a file
    offset, anything else a symbol name."""
    t = text.strip()
    try:
        return int(t, 16) if t.lower().startswith("0x") else int(t) if t.isdigit() else t
    except ValueError:
        return t


# Section types of no probe kind (their libbpf prefixes, as kinds.kind_of_section
# returns them): which libbpf attaches by itself, and which need the caller's
# cgroup.
LSM_SECTION = "lsm"
ITER_SECTION = "iter"
CGROUP_SECTIONS = ("sockops",)
# Section types whose programs need an interface, socket or map from the caller.
NEEDS_CALLER = ("xdp", "tc", "tcx", "netkit", "socket", "sk_skb", "sk_msg", "sk_lookup",
                "flow_dissector", "lirc_mode2", "sk_reuseport", "classifier", "action",
                "struct_ops", "syscall")


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
        kinds.ATTACH_USER_FUNCTION: "_attach_user_spec",
        kinds.ATTACH_USDT: "_attach_usdt_spec",
        kinds.ATTACH_PERF_EVENT: "attach_perf_event",
    }

    def attach(self, target: Optional[str] = None) -> Union[Link, LinkSet]:
        """Attach by kind (see :mod:`pytracers.kinds`): tracepoints take
        "category/name" (or "category:name"), raw tracepoints a name, kprobes a
        function, multi-kprobes a glob, USDT programs
        "binary:provider:name"; BTF-based programs (tp_btf, fentry,
        fexit, fmod_ret) attach to the target fixed at load, perf_event programs
        to an event on every CPU at 99 Hz (a :class:`LinkSet`).  Without
        ``target``, the one written in the program's section.

        A program of no probe kind (``lsm/...``, ``iter/...``, ...) attaches
        as libbpf's auto-attach would (:meth:`attach_auto`); a cgroup program
        takes its cgroup's path as ``target`` (:meth:`attach_cgroup`)."""
        pk = kinds.KINDS.get(self.kind)
        if pk is None:
            if target is not None and self.kind.startswith("cgroup"):
                return self.attach_cgroup(target)
            if target is not None:
                raise BadArgumentError(f"program {self.name!r} ({self.section!r}) attaches "
                                       "where its section says; it takes no target")
            return self.attach_auto()
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

    def _attach_user_spec(self, target: str) -> Link:
        binary, sep, symbol = target.rpartition(":")
        if not sep or not binary or not symbol:
            raise BadArgumentError(f"a uprobe target is 'BINARY:SYMBOL' (or BINARY:0xOFFSET), "
                                   f"got {target!r}")
        return self.attach_uprobe(binary, parse_symbol_or_offset(symbol))

    def _attach_glob(self, pattern: str) -> Link:
        return self.attach_kprobe_multi(pattern=pattern)

    def _attach_fixed(self, target: Optional[str]) -> Link:
        if target and self.attach_target and target != self.attach_target:
            raise BadArgumentError(f"{self.name} was loaded for {self.attach_target}; "
                                   "a BTF-based program's target is fixed before load")
        return self.attach_trace()

    def _attach_usdt_spec(self, target: str) -> Link:
        binary, sep, probe = target.rpartition(":")
        binary, sep2, provider = binary.rpartition(":")
        if not (sep and sep2 and binary and provider and probe):
            raise BadArgumentError(f"a USDT target is 'binary:provider:name', got {target!r}")
        return self.attach_usdt(binary, provider, probe)

    def attach_usdt(self, binary: str, provider: str, name: str, pid: Optional[int] = None,
                    cookie: int = 0) -> Link:
        """Attach to USDT probe ``provider:name`` of ``binary`` (a path, or a
        library/program name resolved by :func:`pytracers.user.targets.resolve_binary`)
        in every process (``pid=None``) or in process ``pid``, through libbpf's
        ``bpf_program__attach_usdt`` (which also increments the probe's
        semaphore while attached).  The program reads ``cookie`` with
        ``bpf_usdt_cookie()``; its object must include ``<bpf/usdt.bpf.h>``."""
        from .user.targets import resolve_binary
        from .user.usdt import find_probe
        self._check_kind(kinds.USDT)
        self.object._check()
        for what, v in (("provider", provider), ("name", name)):
            if not isinstance(v, str) or not v or ":" in v:
                raise BadArgumentError(f"USDT {what} must be a non-empty name, got {v!r}")
        if isinstance(cookie, bool) or not isinstance(cookie, int) or \
                not 0 <= cookie < 1 << 64:
            raise BadTypeError("cookie must be an int in 0..2**64-1")
        if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0):
            raise BadArgumentError(f"pid must be a positive process id, got {pid!r}")
        path = resolve_binary(binary, pid)
        find_probe(path, f"{provider}:{name}")      # TargetNotFoundError with suggestions
        target = f"{path}:{provider}:{name}" + (f" (pid {pid})" if pid else "") + \
            (f" cookie {cookie:#x}" if cookie else "")
        self._refuse_duplicate(kinds.USDT, target)
        opts = ffi.new("struct bpf_usdt_opts *")
        opts.sz = ffi.sizeof("struct bpf_usdt_opts")
        opts.usdt_cookie = cookie
        ptr, err, cap = _libbpf.call_with_log(lib.bpf_program__attach_usdt, self._ptr,
                                              pid if pid else -1, path.encode(),
                                              provider.encode(), name.encode(), opts)
        return self._link(ptr, err, cap, kinds.USDT, target)

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
        reason = host.no_kprobes_reason()
        if reason:  # libbpf would fail with a bare ENOENT
            raise NotSupportedError(kind, reason, min_kernel=kinds.get(kind).min_kernel,
                                    hint=_errmap.alternative_hint(kind))
        from .kernel import symbols
        if symbols.function_exists(function) is False:   # not a libbpf warning, an answer
            raise TargetNotFoundError("kernel function", function,
                                      symbols.function_suggestions(function),
                                      detail=f"program {self.name!r}: in neither the kernel's "
                                             "BTF nor kallsyms")
        ptr, err, cap = _libbpf.call_with_log(lib.bpf_program__attach_kprobe,
                                              self._ptr, retprobe, function.encode())
        return self._link(ptr, err, cap, kind, function)

    def attach_uprobe(self, binary: str, symbol_or_offset: Union[str, int],
                      pid: Optional[int] = None, retprobe: Optional[bool] = None) -> Link:
        """Attach a uprobe (or, with ``retprobe``, a uretprobe) to a function of
        a user-space binary: ``binary`` a path, a library name (``libc``) or,
        with ``pid``, the file that process mapped (see
        :func:`pytracers.user.targets.resolve_binary`); ``symbol_or_offset`` a
        function name (``malloc``, ``malloc@@GLIBC_2.2.5``) or a file offset.
        With ``pid`` only that process fires it, otherwise every process that
        runs the file.  A uprobe stays on the file's inode: a binary replaced on
        disk after attaching is not traced (reattach to trace the new one)."""
        from .user import symbols as user_symbols
        from .user import targets as user_targets
        self._check_kind(*kinds.UPROBE_KINDS)
        self.object._check()
        path = user_targets.resolve_binary(binary, pid)
        offset, desc = user_symbols.resolve_symbol(path, symbol_or_offset)
        if retprobe is None:
            retprobe = kinds.get(self.kind).retprobe
        kind = kinds.URETPROBE if retprobe else kinds.UPROBE
        target = desc if pid is None else f"{desc} (pid {pid})"
        self._refuse_duplicate(kind, target)
        reason = host.no_uprobes_reason()
        if reason:
            raise NotSupportedError(kind, reason, min_kernel=kinds.get(kind).min_kernel,
                                    hint="a kernel built with CONFIG_UPROBE_EVENTS")
        opts = ffi.new("struct bpf_uprobe_opts *")
        opts.sz = ffi.sizeof("struct bpf_uprobe_opts")
        opts.retprobe = bool(retprobe)
        ptr, err, cap = _libbpf.call_with_log(lib.bpf_program__attach_uprobe_opts, self._ptr,
                                              pid if pid is not None else -1, path.encode(),
                                              offset, opts)
        if ptr == ffi.NULL and err == errno.ESRCH and pid is not None:
            from .errors import TargetNotFoundError
            raise TargetNotFoundError("process", str(pid), detail="it exited before the "
                                      "uprobe was attached")
        link = self._link(ptr, err, cap, kind, target)
        link.binary, link.offset, link.pid = path, offset, pid
        return link

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
                errno.EOPNOTSUPP, ENOTSUPP) and _errmap.no_ftrace_site(target):
            raise _errmap.untraceable(self.kind, target, err)
        if ptr == ffi.NULL and self.kind in kinds.TRAMPOLINE_KINDS and err in (
                errno.EPERM, errno.EACCES, errno.EOPNOTSUPP, ENOTSUPP):
            raise _errmap.trampoline_refused(self.kind, err, cap.last_line(), program=self.name)
        if ptr == ffi.NULL and self.kind in kinds.TRAMPOLINE_KINDS and err == errno.EBUSY:
            raise _errmap.untraceable(self.kind, target, err)
        link = self._link(ptr, err, cap, self.kind, target)
        _errmap.note_kind(self.kind, True)
        return link

    # ---- program types of no probe kind ---------------------------------------
    def auto_attach_skip(self) -> Optional[str]:
        """Why libbpf's auto-attach would leave this program alone (its
        section names no target, or its type needs something only the caller
        has), or None when :meth:`attach` with no argument attaches it."""
        pk = kinds.KINDS.get(self.kind)
        if self.kind == kinds.PERF_EVENT:
            return ("a perf_event program needs its event: attach_perf_event() samples "
                    "cpu-clock on every CPU, attach_perf_event(fd) a perf event the caller "
                    "opened")
        if pk is not None:
            if pk.target_fixed_at_load or section_target(self.section):
                return None
            return (f"its section {self.section!r} names no {pk.name} target: "
                    f"attach it with attach(target) ({pk.target})")
        if self.kind.startswith("cgroup"):
            return "a cgroup program needs a cgroup: attach_cgroup(path) or attach(path)"
        if self.kind in NEEDS_CALLER:
            return (f"libbpf cannot auto-attach a {self.kind!r} program (section "
                    f"{self.section!r}): it needs a target only the caller has")
        if self.kind in (LSM_SECTION, ITER_SECTION) and not section_target(self.section):
            return f"its section {self.section!r} names no target"
        return None      # libbpf decides (EOPNOTSUPP: it cannot)

    def attach_auto(self) -> Link:
        """Attach where the program's section says, as libbpf's auto-attach
        does (``bpf_program__attach``): lsm hooks, iterators and the other
        section types libbpf knows how to attach without arguments."""
        self.object._check()
        why = self.auto_attach_skip()
        if why is not None:
            raise BadArgumentError(f"program {self.name!r} cannot attach by itself: {why}")
        pk = kinds.KINDS.get(self.kind)
        if pk is not None:
            link = self.attach()       # one link: a perf_event program was skipped above
            assert isinstance(link, Link)
            return link
        target = section_target(self.section) or self.section
        self._refuse_duplicate(self.kind, target)
        if self.kind == LSM_SECTION and _errmap.bpf_lsm_active() is False:
            # the kernel attaches it all the same, and the hook never runs
            refused = _errmap.lsm_refused(self.name, errno.EOPNOTSUPP, "")
            assert refused is not None
            raise refused
        ptr, err, cap = _libbpf.call_with_log(lib.bpf_program__attach, self._ptr)
        if ptr == ffi.NULL:
            raise self._generic_refused(err, cap, target)
        return self._link(ptr, err, cap, self.kind, target)

    def _generic_refused(self, err: int, cap: Any, target: str) -> Exception:
        said = _errmap.quote(cap.lines)
        if self.kind == LSM_SECTION:
            refused = _errmap.lsm_refused(self.name, err, "")
            if refused is not None:
                return refused
        if err in (errno.EOPNOTSUPP, ENOTSUPP):
            return NotSupportedError(f"attaching {self.kind} programs",
                                     f"program {self.name!r}: libbpf or the kernel cannot "
                                     f"attach a {self.section!r} program "
                                     f"({errno_name(err)}{': ' + said if said else ''})",
                                     errno=err)
        return _errmap.attach_error(self.kind, f"{target} (program {self.name!r})", err, said)

    def attach_perf_fd(self, perf_fd: int) -> Link:
        """Attach a ``perf_event`` program to a perf event the caller opened (a
        file descriptor from perf_event_open).  The link holds its own
        duplicate of the fd: the caller's stays the caller's to close."""
        self._check_kind(kinds.PERF_EVENT)
        self.object._check()
        if not isinstance(perf_fd, int) or isinstance(perf_fd, bool) or perf_fd < 0:
            raise BadTypeError("perf_fd must be the file descriptor of an open perf event")
        target = f"perf event fd {perf_fd}"
        import os
        try:
            mine = os.dup(perf_fd)     # the link closes the fd it was given
        except OSError as e:
            raise BadArgumentError(f"perf_fd {perf_fd}: {e.strerror}") from None
        ptr, err, cap = _libbpf.call_with_log(lib.bpf_program__attach_perf_event, self._ptr,
                                              mine)
        if ptr == ffi.NULL:
            os.close(mine)
            raise _errmap.attach_error(self.kind, f"{target} (program {self.name!r})", err,
                                       _errmap.quote(cap.lines))
        return self._link(ptr, err, cap, self.kind, target)

    def attach_cgroup(self, path: str) -> Link:
        """Attach a cgroup program (``cgroup/...``, ``cgroup_skb/...``,
        ``sockops``...) to the cgroup v2 directory ``path``."""
        if not self.kind.startswith("cgroup") and self.kind not in CGROUP_SECTIONS:
            raise BadArgumentError(f"program {self.name!r} is a {self.kind} program "
                                   f"(section {self.section!r}), not a cgroup program")
        self.object._check()
        if not isinstance(path, str) or not path:
            raise BadTypeError("cgroup path must be a non-empty str")
        import os
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            raise TargetNotFoundError("cgroup", path, detail="no such directory") from None
        except OSError as e:
            raise BadArgumentError(f"cannot open cgroup {path}: {e.strerror}") from None
        try:
            self._refuse_duplicate(self.kind, path)
            ptr, err, cap = _libbpf.call_with_log(lib.bpf_program__attach_cgroup, self._ptr, fd)
        finally:
            os.close(fd)       # the link holds the cgroup itself
        if ptr == ffi.NULL and err == errno.EBADF:
            raise BadArgumentError(f"cannot attach program {self.name!r} to {path}: not a "
                                   "cgroup v2 directory (the kernel wants a directory of a "
                                   "cgroup2 mount)")
        if ptr == ffi.NULL:
            raise _errmap.attach_error(self.kind, f"cgroup {path} (program {self.name!r})", err,
                                       _errmap.quote(cap.lines))
        return self._link(ptr, err, cap, self.kind, path)

    def read_iter(self) -> bytes:
        """Run an ``iter/...`` program once: attach it, read what it prints
        (``BPF_SEQ_PRINTF``) to the end, detach."""
        self._check_kind(ITER_SECTION)
        import os
        with self.attach_auto() as link:
            fd = checked(lib.bpf_iter_create, link.fd, what=f"run iterator {self.name!r}",
                         error=LinkError)
            chunks = []
            try:
                while True:
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        break
                    chunks.append(chunk)
            finally:
                os.close(fd)
        return b"".join(chunks)

    def attach_perf_event(self, event: Union[str, int] = "auto", *, frequency: int = 99,
                          cpus: Optional[Sequence[int]] = None,
                          pid: int = -1) -> Union[LinkSet, Link]:
        """Run this ``perf_event`` program at ``frequency`` Hz on each CPU of
        ``cpus`` (default: every online CPU), sampling ``event`` (see
        :mod:`pytracers.perf`: ``cpu-clock``, ``cycles``...; ``auto`` picks
        cycles where there is a PMU).  One perf event and one link per CPU,
        returned together as a :class:`~pytracers.link.LinkSet`.  ``event``
        an int: the file descriptor of a perf event the caller opened
        (:meth:`attach_perf_fd`, one link)."""
        if isinstance(event, int) and not isinstance(event, bool):
            return self.attach_perf_fd(event)
        if not isinstance(event, str):
            raise BadTypeError("event must be a perf event name or an open perf event's fd")
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


def __getattr__(name: str) -> Any:
    """attach_all and AttachedAll live in :mod:`pytracers.attachall`; importable
    from here as before, loaded on first use."""
    if name in ("AttachedAll", "attach_all"):
        from . import attachall
        return getattr(attachall, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
