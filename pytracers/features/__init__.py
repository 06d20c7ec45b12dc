"""What this kernel supports, each answer with its reason: ``probe()`` and ``can_attach()``.

    report = pytracers.features.probe()
    report.fentry.supported, report.fentry.reason, report.fentry.fix
    print(report.table())

How each feature is decided
---------------------------
Where reading a file is not enough, by a real, tiny load + attach attempt
(the programs of ``features.bpf.o``, one loaded at a time, each returning 0 and
detached/closed at once), as libbpf-tools' ``fentry_can_attach`` does:

=============  ===========================================================
btf            /sys/kernel/btf/vmlinux exists and parses
ringbuf        load a program that reserves/discards in a ring-buffer map
tp             attach to syscalls:sys_enter_getpid (else sched:sched_switch)
raw_tp         attach to the raw tracepoint sys_enter
tp_btf         load (BTF target sys_enter) and attach
kprobe         attach a kprobe to a probe function (security_file_open...)
kretprobe      the same, as a return probe
kprobe_multi   one multi-kprobe link on that function (by name)
uprobe         attach a uprobe to libc's getpid, for this process only
uretprobe      the same, as a return probe
fentry/fexit   load against the probe function's BTF, attach
fmod_ret       load against security_file_open (returns 0: no effect), attach
perf_event     attach to a cpu-clock perf event on CPU 0 (at 99 Hz)
stacks         a BPF_MAP_TYPE_STACK_TRACE map, and bpf_get_stack (kernel and
               user stacks) accepted by the verifier in a perf_event program
cookies        load a program calling bpf_get_attach_cookie
usdt           attach to a USDT probe of a binary that has one (CPython's
               gc__start, libstdc++'s throw); no such binary: inconclusive
tracefs        mounted, or mountable (pytracers mounts it when needed)
lockdown       securityfs' lockdown mode (confidentiality forbids tracing reads)
=============  ===========================================================

Contract (as cilium/ebpf's features package): only success and
:class:`~pytracers.errors.NotSupportedError` are conclusive about the kernel.
Conclusive answers are cached for the life of the process; an inconclusive
"no" (permission, a missing probe target, an unexpected errno) is reported
with ``conclusive=False`` and tried again next time.  ``probe(refresh=True)``
forgets the cache.

``can_attach(kind, function)`` answers for one function: the kind works here
and the function is in the kernel's BTF (trampolines), in kallsyms (kprobes),
in available_filter_functions when readable (trampolines and kprobe_multi
need an ftrace site: a function missing there is notrace or inlined), not on
the kprobe blacklist when readable (kprobes), and modifiable (fmod_ret:
security_* hooks and error-injection functions).
"""
from __future__ import annotations

import errno as _errno
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from .. import _errmap, kinds
from .._shipped import object_path
from ..errors import (ENOTSUPP, KeyNotFoundError, NotSupportedError, PytracersError,
                     TargetNotFoundError, TracefsError)
from ..kernel import host, symbols, tracefs
from ..kernel.arch import architecture
# kernel facts, also importable from here as before
from ..kernel.host import SECURITYFS, kernel_release, kernel_version
from ..kernel.symbols import (error_injection_list, filter_functions, in_btf,  # noqa: F401
                             kallsyms_functions, kprobe_blacklist)

__all__ = ["Feature", "FeatureReport", "CanAttach", "probe", "can_attach", "FEATURES",
           "PROBE_KINDS", "probe_function"]

PROBE_KINDS = kinds.PROBED_KINDS
FEATURES = ("btf", "ringbuf") + PROBE_KINDS + ("stacks", "cookies", "tracefs", "lockdown")

# Functions present from 5.10 to 7.x, traceable, not on the kprobe blacklist.
PROBE_FUNCTIONS = ("security_file_open", "vfs_read", "vfs_write")
FMOD_RET_FUNCTIONS = ("security_file_open", "security_file_permission")

MIN_KERNEL = dict({k.name: k.min_kernel for k in kinds.KINDS.values()},
                  btf="5.4", ringbuf="5.8", cookies="5.15", stacks="4.18")


@dataclass
class Feature:
    """One answer of :func:`probe`."""

    name: str
    supported: bool
    reason: str
    fix: Optional[str] = None
    conclusive: bool = True
    min_kernel: Optional[str] = None
    seconds: float = 0.0          # time the check took (0 when cached)

    def __bool__(self) -> bool:
        return self.supported


class FeatureReport:
    """What the running kernel supports: one :class:`Feature` per name of
    :data:`FEATURES`, as an attribute (``report.fentry``) and an item
    (``report["fentry"]``), iterated in that order."""

    def __init__(self, features: Dict[str, Feature], kernel: str = "",
                 seconds: float = 0.0, arch: str = "",
                 arch_notes: Tuple[str, ...] = ()) -> None:
        missing = [n for n in FEATURES if n not in features]
        if missing:
            raise TypeError(f"FeatureReport needs every feature; missing {missing}")
        self._features = {n: features[n] for n in FEATURES}
        self.kernel = kernel
        self.seconds = seconds          # wall time of the probe() call
        self.arch = arch                # "x86-64", "arm64" (architecture())
        self.arch_notes = arch_notes    # what the architecture changes

    def __getattr__(self, name: str) -> Feature:
        try:
            feature: Feature = self.__dict__["_features"][name]
            return feature
        except KeyError:
            raise AttributeError(f"{type(self).__name__!r} has no feature {name!r}; "
                                 f"features: {', '.join(FEATURES)}") from None

    def __getitem__(self, name: str) -> Feature:
        if name not in FEATURES:
            raise KeyNotFoundError(name, "the feature report", "features: " + ", ".join(FEATURES))
        return self._features[name]

    def __iter__(self) -> Iterator[Feature]:
        return iter(self._features.values())

    def __eq__(self, other: Any) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool((self._features, self.kernel, self.seconds, self.arch, self.arch_notes)
                    == (other._features, other.kernel, other.seconds, other.arch,
                        other.arch_notes))

    __hash__ = None     # type: ignore[assignment]  # mutable: unhashable

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={f!r}" for n, f in self._features.items())
        return (f"FeatureReport({inner}, kernel={self.kernel!r}, arch={self.arch!r}, "
                f"seconds={self.seconds!r})")

    def supported(self) -> List[str]:
        return [f.name for f in self if f.supported]

    def table(self) -> str:
        """A plain-text table: feature, yes/no, reason (and fix)."""
        rows = [f"kernel {self.kernel} (probed in {self.seconds * 1000:.0f} ms)"]
        w = max(len(n) for n in FEATURES)
        for f in self:
            mark = "yes" if f.supported else ("no " if f.conclusive else "?  ")
            line = f"  {f.name:<{w}}  {mark}  {f.reason}"
            if f.fix and not f.supported:
                line += f"  [fix: {f.fix}]"
            rows.append(line)
        return "\n".join(rows)


# ---------------------------------------------------------------------- caching

_locks: Dict[str, threading.Lock] = {}
_cache: Dict[str, Feature] = {}


def _ok(name: str, reason: str) -> Feature:
    return Feature(name, True, reason, min_kernel=MIN_KERNEL.get(name))


def _no(name: str, reason: str, fix: Optional[str] = None, conclusive: bool = True) -> Feature:
    return Feature(name, False, reason, fix, conclusive, MIN_KERNEL.get(name))


def _from_exc(name: str, e: BaseException) -> Feature:
    """A "no" from an exception: conclusive only for NotSupportedError."""
    if isinstance(e, NotSupportedError):
        return _no(name, e.reason, e.hint)
    if isinstance(e, TargetNotFoundError):
        return _no(name, f"symbol missing: {e}", "probe another target", conclusive=False)
    return _no(name, f"{type(e).__name__}: {e}", conclusive=False)


# ---------------------------------------------------------------------- helpers

def _first_target(kind: str, names: Tuple[str, ...], attempt: Callable[[str], None]) -> str:
    """Try ``attempt(name)`` on each candidate until one is not missing; the
    name it worked on.  Cheaper than looking the names up first (kallsyms and
    the BTF index cost ~100 ms to build)."""
    missing: List[str] = []
    for n in names:
        try:
            attempt(n)
            return n
        except TargetNotFoundError:
            missing.append(n)
    raise TargetNotFoundError("probe target for " + kind, " / ".join(missing))


# ---------------------------------------------------------------------- real attempts

class _QuietProbes(logging.Filter):
    """Drop libbpf's messages about the prober's own expected failures (the
    answer carries the reason); other threads' messages pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_quiet, "on", False)


_quiet = threading.local()
logging.getLogger("pytracers.libbpf").addFilter(_QuietProbes())


def _attempt(prog: Union[str, kinds.ProbeKind], setup: Callable[[Any], None],
             attach: Callable[[Any], Any]) -> None:
    """Load program ``prog`` of features.bpf.o (a kind's feature program) alone,
    attach it, detach and close."""
    if isinstance(prog, kinds.ProbeKind):
        assert prog.feature_program is not None
        prog = prog.feature_program
    _quiet.on = True
    try:
        _attempt_loud(prog, setup, attach)
    finally:
        _quiet.on = False


def _attempt_loud(prog: str, setup: Callable[[Any], None], attach: Callable[[Any], Any]) -> None:
    from ..object import open as open_object
    o = open_object(object_path("features"))
    try:
        o.only(prog)
        for m, user in _MAP_USERS.items():
            if user != prog:
                o.maps[m].autocreate = False
        setup(o)
        obj = o.load()
    except BaseException:
        o.close()
        raise
    with obj:
        link = attach(obj.programs[prog])
        if link is not None:
            link.close()


_MAP_USERS = {"probe_rb": "probe_ringbuf", "__bpf_usdt_specs": "probe_usdt",  # one user each
              "__bpf_usdt_ip_to_spec_id": "probe_usdt"}


def _nothing(o: Any) -> None:
    pass


def _targets(pk: kinds.ProbeKind) -> Tuple[str, ...]:
    """The stable functions the prober may attach ``pk`` to, best first."""
    return FMOD_RET_FUNCTIONS if pk.name == kinds.FMOD_RET else PROBE_FUNCTIONS


def _probe_tracepoint(pk: kinds.ProbeKind) -> Feature:
    try:
        root = tracefs.root()
    except TracefsError as e:
        return _no(pk.name, f"tracefs is unavailable: {e}", "mount -t tracefs tracefs "
                   "/sys/kernel/tracing")
    for cat, name in (("syscalls", "sys_enter_getpid"), ("sched", "sched_switch")):
        if os.path.isdir(os.path.join(root, "events", cat, name)):
            _attempt(pk, _nothing, lambda p: p.attach_tracepoint(cat, name))
            return _ok(pk.name, f"attached to {cat}:{name}")
    return _no(pk.name, "tracefs lists neither syscalls:sys_enter_getpid nor "
               "sched:sched_switch", "CONFIG_FTRACE_SYSCALLS / CONFIG_TRACEPOINTS")


def _probe_raw_tracepoint(pk: kinds.ProbeKind) -> Feature:
    _attempt(pk, _nothing, lambda p: p.attach_raw_tracepoint("sys_enter"))
    return _ok(pk.name, "attached to raw tracepoint sys_enter")


def _probe_btf_typed(pk: kinds.ProbeKind) -> Feature:
    if pk.trampoline:
        return _probe_trampoline(pk)
    _attempt(pk, _nothing, lambda p: p.attach())   # the target is in its section
    return _ok(pk.name, "loaded against btf_trace_sys_enter and attached")


def _probe_kprobe(pk: kinds.ProbeKind) -> Feature:
    reason = host.no_kprobes_reason()
    if reason:  # attach would fail with a bare ENOENT; this says why
        raise NotSupportedError(pk.name, reason, hint="use fentry/fexit or a tracepoint")
    fn = _first_target(pk.name, _targets(pk), lambda f: _attempt(
        pk, _nothing, lambda p: p.attach_kprobe(f, retprobe=pk.retprobe)))
    return _ok(pk.name, f"attached to {fn}")


def _probe_kprobe_multi(pk: kinds.ProbeKind) -> Feature:
    try:
        fn = _first_target(pk.name, _targets(pk), lambda f: _attempt(
            pk, _nothing, lambda p: p.attach_kprobe_multi(functions=[f])))
    except PytracersError as e:
        raise kprobe_multi_refusal(e) from e
    return _ok(pk.name, f"multi-kprobe link on {fn}")


def kprobe_multi_refusal(e: PytracersError) -> PytracersError:
    """A failed multi-kprobe attach: before 5.18 the kernel does not know the
    link type and says only EINVAL -- that is a NotSupportedError."""
    from ..errors import VerifierError
    err = getattr(e, "errno", None)
    if isinstance(e, VerifierError) and kernel_version() < (5, 18):
        said = [ln for ln in e.log.splitlines() if "func" in ln and ("unknown" in ln or
                                                                    "invalid" in ln)]
        return NotSupportedError(kinds.KPROBE_MULTI, f"Linux {kernel_release()} predates multi-kprobe "
                                 "links and bpf_get_func_ip in kprobe programs (verifier: "
                                 f"{said[0] if said else e.tail(1)})", min_kernel="5.18",
                                 hint="attach one kprobe per function")
    if not isinstance(e, (NotSupportedError, TargetNotFoundError)) and \
            err in (_errno.EINVAL, _errno.EOPNOTSUPP, ENOTSUPP) and kernel_version() < (5, 18):
        return NotSupportedError(kinds.KPROBE_MULTI, f"the kernel rejects multi-kprobe links "
                                 f"({_errno.errorcode.get(err or 0, err)}): Linux "
                                 f"{kernel_release()} predates them", min_kernel="5.18",
                                 hint="attach one kprobe per function")
    return e


UPROBE_SYMBOLS = ("getpid", "getppid")     # of libc, present everywhere


def _probe_uprobe(pk: kinds.ProbeKind) -> Feature:
    reason = host.no_uprobes_reason()
    if reason:  # libbpf would fail with a bare ENOENT; this says why
        raise NotSupportedError(pk.name, reason, min_kernel=pk.min_kernel,
                                hint="a kernel built with CONFIG_UPROBE_EVENTS")
    fn = _first_target(pk.name, UPROBE_SYMBOLS, lambda f: _attempt(
        pk, _nothing, lambda p: p.attach_uprobe("libc", f, pid=os.getpid(),
                                                retprobe=pk.retprobe)))
    return _ok(pk.name, f"attached to libc:{fn} (this process)")


def _probe_trampoline(pk: kinds.ProbeKind) -> Feature:
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        raise NotSupportedError(pk.name, "the kernel has no BTF (/sys/kernel/btf/vmlinux): "
                                "CONFIG_DEBUG_INFO_BTF is off")

    def attempt(fn: str) -> None:
        def setup(o: Any) -> None:
            o.programs[pk.feature_program].set_attach_target(fn)
        _attempt(pk, setup, lambda p: p.attach_trace())
    fn = _first_target(pk.name, _targets(pk), attempt)
    return _ok(pk.name, f"BPF trampoline on {fn}")


def _probe_usdt(pk: kinds.ProbeKind) -> Feature:
    from ..user.targets import mapped_files
    from ..user.usdt import WELL_KNOWN, well_known_probes
    if host.no_uprobes_reason():
        raise NotSupportedError(pk.name, host.no_uprobes_reason() or "")
    for pr in well_known_probes():
        for pid in (None, os.getpid()):     # without BPF cookies a library needs a pid: ours
            try:
                _attempt(pk, _nothing, lambda p: p.attach_usdt(pr.path, pr.provider, pr.name,
                                                               pid=pid))
                return _ok(pk.name, f"attached to {pr.full_name} of {pr.path}"
                           + (" (this process)" if pid else ""))
            except NotSupportedError as e:
                if e.min_kernel is None:
                    raise
                if pid or pr.path not in mapped_files(os.getpid()):
                    break
    return _no(pk.name, "no binary with a USDT probe to try: " + ", ".join(
        f"{b} ({p})" for b, p in WELL_KNOWN), "Debian's python3 (built --with-dtrace)",
        conclusive=False)
def _probe_perf_event(pk: kinds.ProbeKind) -> Feature:
    _attempt(pk, _nothing, lambda p: p.attach_perf_event("cpu-clock", frequency=99, cpus=[0]))
    return _ok(pk.name, "attached to a cpu-clock perf event on CPU 0")


# How each attach style (kinds.ProbeKind.attach) is probed: a real load and attach.
_KIND_PROBES: Dict[str, Callable[[kinds.ProbeKind], Feature]] = {
    kinds.ATTACH_TRACEPOINT: _probe_tracepoint,
    kinds.ATTACH_RAW_TRACEPOINT: _probe_raw_tracepoint,
    kinds.ATTACH_BTF: _probe_btf_typed,
    kinds.ATTACH_FUNCTION: _probe_kprobe,
    kinds.ATTACH_FUNCTION_GLOB: _probe_kprobe_multi,
    kinds.ATTACH_USER_FUNCTION: _probe_uprobe,
    kinds.ATTACH_USDT: _probe_usdt,
    kinds.ATTACH_PERF_EVENT: _probe_perf_event,
}


def _probe_ringbuf() -> Feature:
    _attempt("probe_ringbuf", _nothing, lambda p: None)
    return _ok("ringbuf", "loaded a program reserving in a BPF_MAP_TYPE_RINGBUF map")


def _probe_stacks() -> Feature:
    from .._libbpf import ffi, lib
    from ..maps import MapType
    if lib.libbpf_probe_bpf_map_type(MapType.STACK_TRACE, ffi.NULL) != 1:
        raise NotSupportedError("stacks", "the kernel has no BPF_MAP_TYPE_STACK_TRACE maps "
                                "(CONFIG_BPF_EVENTS / CONFIG_PERF_EVENTS off?)",
                                min_kernel="4.6")
    try:
        _attempt("probe_stack", _nothing, lambda p: None)
    except PytracersError as e:
        from ..errors import VerifierError
        if isinstance(e, VerifierError) and ("unknown func" in e.log or "invalid func" in e.log):
            raise NotSupportedError("stacks", "the verifier does not know bpf_get_stack",
                                    min_kernel="4.18") from e
        raise
    return _ok("stacks", "stack-trace maps, and bpf_get_stack for kernel and user stacks")


def _probe_cookies() -> Feature:
    try:
        _attempt("probe_cookie", _nothing, lambda p: None)
    except PytracersError as e:
        from ..errors import VerifierError
        if isinstance(e, VerifierError) and ("unknown func" in e.log or "invalid func" in e.log):
            raise NotSupportedError("cookies", "the verifier does not know "
                                    "bpf_get_attach_cookie", min_kernel="5.15") from e
        raise
    return _ok("cookies", "bpf_get_attach_cookie accepted by the verifier")


def _probe_btf() -> Feature:
    path = "/sys/kernel/btf/vmlinux"
    if not os.path.exists(path):
        raise NotSupportedError("btf", f"{path} is missing: CONFIG_DEBUG_INFO_BTF is off",
                                hint="CO-RE, tp_btf and trampolines need kernel BTF")
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] not in (b"\x9f\xeb", b"\xeb\x9f"):
        return _no("btf", f"{path} does not start with the BTF magic", conclusive=False)
    return _ok("btf", f"{path} ({os.path.getsize(path) >> 10} KiB)")


def _probe_tracefs() -> Feature:
    try:
        root = tracefs.root()
    except TracefsError as e:
        raise NotSupportedError("tracefs", str(e),
                                hint="mount -t tracefs tracefs /sys/kernel/tracing") from e
    aff = host.read_text(os.path.join(root, "available_filter_functions")) is not None
    return _ok("tracefs", f"at {root}; available_filter_functions "
                          f"{'readable' if aff else 'unreadable'}")


def lockdown_mode() -> Optional[str]:
    """The lockdown mode, mounting securityfs (root) if it is not mounted."""
    return host.lockdown_mode(mount=True)


def _probe_lockdown() -> Feature:
    mode = lockdown_mode()
    if mode is None:
        if not os.path.isdir(SECURITYFS) or os.listdir(SECURITYFS):
            return _ok("lockdown", "no lockdown LSM (securityfs has no lockdown file)")
        return _no("lockdown", "securityfs is not mounted and could not be mounted: mode unknown",
                   conclusive=False)
    if mode == "none":
        return _ok("lockdown", "lockdown is 'none'")
    if mode == "integrity":
        return _ok("lockdown", "lockdown is 'integrity': kernel memory may be read "
                               "(bpf_probe_write_user is blocked)")
    return _no("lockdown", f"lockdown is '{mode}': BPF may not read kernel memory, so tracing "
               "programs are refused", "boot with lockdown=integrity or none")


def _kind_probe(pk: kinds.ProbeKind) -> Callable[[], Feature]:
    return lambda: _KIND_PROBES[pk.attach](pk)


_PROBES: Dict[str, Callable[[], Feature]] = {
    "btf": _probe_btf,
    "ringbuf": _probe_ringbuf,
    **{k: _kind_probe(kinds.KINDS[k]) for k in PROBE_KINDS},
    "stacks": _probe_stacks,
    "cookies": _probe_cookies,
    "tracefs": _probe_tracefs,
    "lockdown": _probe_lockdown,
}


def probe_one(name: str, refresh: bool = False) -> Feature:
    """Probe one feature (cached when conclusive)."""
    if name not in _PROBES:
        raise KeyNotFoundError(name, "the features pytracers probes",
                               "features: " + ", ".join(FEATURES))
    with _locks.setdefault(name, threading.Lock()):
        if not refresh and name in _cache:
            f = _cache[name]
            return Feature(f.name, f.supported, f.reason, f.fix, f.conclusive, f.min_kernel, 0.0)
        t0 = time.perf_counter()
        try:
            f = _PROBES[name]()
        except NotSupportedError as e:
            f = _no(name, e.reason, e.hint)
        except Exception as e:  # inconclusive; never crash the prober
            f = _from_exc(name, e)
        f.seconds = time.perf_counter() - t0
        if f.conclusive:
            _cache[name] = f
        return f


def probe(refresh: bool = False) -> FeatureReport:
    """Probe every feature of :data:`FEATURES` (see the module docstring).

    The checks run in parallel threads: most of a probe's time is the kernel
    waiting for an RCU grace period when a perf-event link (tp, kprobe) is
    destroyed, and concurrent waits share grace periods.
    """
    t0 = time.perf_counter()
    todo = [n for n in FEATURES if refresh or n not in _cache]
    if "lockdown" in todo:
        # first, alone: it may mount securityfs, which the trampoline checks
        # read to explain an EPERM -- their reasons must not depend on timing
        lockdown_mode()
    got: Dict[str, Feature] = {}
    if len(todo) > 1:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=len(todo), thread_name_prefix="pt-probe") as ex:
            got.update(zip(todo, ex.map(lambda n: probe_one(n, refresh), todo)))
    for name in FEATURES:
        if name not in got:
            got[name] = probe_one(name, refresh)
    arch, notes = architecture()
    return FeatureReport(got, kernel=kernel_release(), seconds=time.perf_counter() - t0,
                         arch=arch, arch_notes=notes)


def clear_cache() -> None:
    """Forget every cached answer and list (kallsyms, ftrace sites, blacklists)."""
    _cache.clear()
    symbols.clear_cache()


def _cached_presence(kind: str) -> Optional[bool]:
    """What the cache already says about ``kind`` (never probes): the error
    mapping asks it before a hint names another kind."""
    f = _cache.get(kind)
    return None if f is None else f.supported


_errmap.set_kind_oracle(_cached_presence)


# can_attach(), CanAttach and probe_function() live in .functions (this module's
# size); they are importable from here as ever.
from .functions import CanAttach, can_attach, probe_function  # noqa: E402
