"""SyscallTracer: one record per completed syscall (syscalls.bpf.o).

Three kinds trace the same thing at different costs:

* ``tp`` -- the per-syscall tracepoints ``syscalls:sys_enter_<X>`` /
  ``sys_exit_<X>``: the probe runs only when X is called, so tracing
  ``openat`` costs nothing for the other syscalls.  Needs tracefs and
  CONFIG_FTRACE_SYSCALLS; needs the syscalls named.
* ``raw_tp`` -- the raw ``sys_enter`` / ``sys_exit`` tracepoints: the probe
  runs on *every* syscall of the system and drops the unwanted ones with an
  id lookup in BPF.  Cheaper per traced call than ``tp``, dearer for the
  system as a whole when you want a few rare syscalls.
* ``tp_btf`` -- the same two tracepoints with typed (BTF) arguments: the
  cheapest per call, and like ``raw_tp`` it runs on every syscall.

Latency or not
--------------
By default (``measure_latency=True``) each syscall runs two programs: the
entry one stores the arguments and a timestamp per thread, the exit one
pairs them with the return value and emits the record.  With
``measure_latency=False`` one program per syscall runs, at exit, with no
pairing map: it reads the id, the return value and the argument registers
from the task's saved user registers, which the syscall leaves as they were
at entry (not for ``execve``/``execveat``, whose registers are the new
image's -- use :class:`~pytracers.tracers.ExecTracer` -- nor for
``rt_sigreturn``).  ``ev.latency_ns`` is then None.  That costs the traced
path about half of what the pair costs (``bench/run --only probe-cost``;
BENCHMARKS.md).  The
``tp`` kind reads the registers through ``bpf_task_pt_regs`` (kernel 5.15);
an older kernel refuses it and the tracer falls back to the entry/exit pair
(``t.measure_latency`` then says True, and ``t.why`` says so).

Names and numbers
-----------------
Which syscalls the running kernel has, how many arguments each takes and
their names are read from the kernel at run time: tracefs
``events/syscalls/sys_enter_<X>/format`` (the fields after ``__syscall_nr``).
The name -> number map is *not* published by the kernel in a readable form
(not in BTF, not in the format files), so numbers come from the committed
table of the running machine's architecture (an ABI that never changes):
x86-64's in :mod:`pytracers.tracers._x86_64_syscalls`, arm64's (the generic
table) in :mod:`pytracers.tracers._arm64_syscalls`.  A few syscalls have a tracepoint named after the kernel function
rather than the ABI name (``stat`` -> ``sys_enter_newstat``); both names are
accepted.
"""
from __future__ import annotations

import os
from typing import (Any, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple,
                    Type, Union)

from ..kernel import tracefs
from ..errors import BadArgumentError, BadTypeError, TargetNotFoundError, TracefsError
from ..kinds import RAW_TP, TP, TP_BTF
from .._shipped import arch_name, machine
from .base import Tracer, named_tuple

__all__ = ["SyscallTracer", "SyscallStats", "SyscallCounters", "syscall_number",
           "syscall_name", "syscall_params", "kernel_syscalls", "tracepoint_name", "KINDS"]

KINDS = (TP, RAW_TP, TP_BTF)
# tp: one entry program per arity (sc_tp_enter<N>: the kernel refuses a tp
# program that reads past the end of the tracepoint's record), one exit.
PROGRAMS = {RAW_TP: ("sc_raw_enter", "sc_raw_exit"), TP_BTF: ("sc_btf_enter", "sc_btf_exit")}
# measure_latency=False: one program per syscall, at exit (reads pt_regs).
EXIT_ONLY = {TP: "sc_tp_exit_regs", RAW_TP: "sc_raw_exit_regs", TP_BTF: "sc_btf_exit_regs"}
MAX_ID = 1024  # size of the object's syscall_ids map

# ABI name -> name of its syscalls:sys_enter_* tracepoint, where they differ.
TP_ALIASES = {"stat": "newstat", "fstat": "newfstat", "lstat": "newlstat", "uname": "newuname",
              "sendfile": "sendfile64", "umount2": "umount"}
_ABI_OF_TP = {v: k for k, v in TP_ALIASES.items()}


class _SyscallTables(Mapping[str, Dict[str, int]]):
    """os.uname().machine -> its syscall numbers; a table's module is imported
    when it is first asked for (a start imports only the running machine's)."""

    _MODULES = {"x86_64": ("_x86_64_syscalls", "X86_64"), "aarch64": ("_arm64_syscalls", "ARM64")}

    def __init__(self) -> None:
        self._loaded: Dict[str, Dict[str, int]] = {}

    def __getitem__(self, machine_name: str) -> Dict[str, int]:
        if machine_name not in self._loaded:
            module, name = self._MODULES[machine_name]
            from importlib import import_module
            self._loaded[machine_name] = getattr(import_module(f".{module}", __package__), name)
        return self._loaded[machine_name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._MODULES)

    def __len__(self) -> int:
        return len(self._MODULES)


SYSCALL_TABLES: Mapping[str, Dict[str, int]] = _SyscallTables()
# this machine's (an architecture without a table has no names: numbers only)
SYSCALLS: Dict[str, int] = SYSCALL_TABLES.get(machine(), {})
_NAME_OF_NR = {nr: name for name, nr in SYSCALLS.items()}

WHY = {
    TP: ("tp: the per-syscall tracepoints {tps} run only when {n} is called, so the rest of "
           "the system pays nothing; a stable ABI"),
    RAW_TP: ("raw_tp: the raw sys_enter/sys_exit tracepoints run on every syscall of the "
               "system and drop the others by id in BPF: cheaper per traced call than tp "
               "(no perf-event record), dearer overall when {n} is rare"),
    TP_BTF: ("tp_btf: sys_enter/sys_exit with typed BTF arguments run on every syscall of "
               "the system and drop the others by id in BPF: the cheapest per call, but every "
               "syscall of the system pays for the check"),
}


def kernel_syscalls() -> Optional[List[str]]:
    """Tracepoint names of the syscalls the running kernel traces
    (``openat``, ``newstat``...), or None when tracefs has no syscall events."""
    try:
        d = os.path.join(tracefs.root(), "events", "syscalls")
        if d in _KERNEL_SYSCALLS:    # a kernel's syscalls do not change while it runs
            return list(_KERNEL_SYSCALLS[d])
        names = os.listdir(d)
    except (TracefsError, OSError):
        return None
    found = sorted(n[len("sys_enter_"):] for n in names if n.startswith("sys_enter_"))
    _KERNEL_SYSCALLS[d] = tuple(found)
    return found


_KERNEL_SYSCALLS: Dict[str, Tuple[str, ...]] = {}


def tracepoint_name(name: str) -> str:
    """The syscalls:sys_enter_* name of ABI syscall ``name``."""
    return TP_ALIASES.get(name, name)


def _abi_name(name: str) -> str:
    return _ABI_OF_TP.get(name, name)


def syscall_number(name: Union[str, int]) -> int:
    """The number of syscall ``name`` (ABI or tracepoint name) on this
    machine's architecture."""
    if isinstance(name, bool) or not isinstance(name, (str, int)):
        raise BadTypeError(f"a syscall is a name or a number, not {type(name).__name__}")
    if isinstance(name, int):
        if not 0 <= name < MAX_ID:
            raise BadArgumentError(f"syscall number {name} out of range 0..{MAX_ID - 1}")
        return name
    nr = SYSCALLS.get(_abi_name(name))
    if nr is None:
        known = set(SYSCALLS) | set(kernel_syscalls() or ())
        import difflib
        raise TargetNotFoundError("syscall", name, difflib.get_close_matches(name, known, n=5),
                                  detail=f"{arch_name()} syscall names as in man 2 syscalls, "
                                         "e.g. openat, or a number")
    return nr


def syscall_name(nr: int) -> str:
    """The ABI name of syscall ``nr`` on this machine's architecture
    (``"syscall_<nr>"`` if unknown)."""
    return _NAME_OF_NR.get(nr, f"syscall_{nr}")


_PARAMS: Dict[str, Optional[Tuple[str, ...]]] = {}
_SIGNED: Dict[str, Tuple[int, ...]] = {}   # per syscall: bits of each signed argument (0: unsigned)
# Argument types the kernel declares signed; the registers hold them
# zero-extended (an int fd of -100 arrives as 0xffffff9c), so they are
# sign-converted to their width.
_SIGNED_TYPES = {"int": 32, "pid_t": 32, "clockid_t": 32, "key_serial_t": 32, "timer_t": 32,
                 "long": 64, "off_t": 64, "loff_t": 64}


def syscall_params(name: str) -> Optional[Tuple[str, ...]]:
    """Argument names of syscall ``name`` as the running kernel declares them
    (tracefs format of sys_enter_<name>), or None if tracefs cannot tell."""
    tp = tracepoint_name(_abi_name(name))
    if tp in _PARAMS:
        return _PARAMS[tp]
    out: Optional[Tuple[str, ...]] = None
    try:
        path = os.path.join(tracefs.root(), "events", "syscalls", f"sys_enter_{tp}", "format")
        with open(path) as f:
            text = f.read()
    except (TracefsError, OSError):
        text = None
    if text is not None:
        names: List[str] = []
        bits: List[int] = []
        seen_nr = False
        for line in text.splitlines():
            line = line.strip()
            if not line.startswith("field:"):
                continue
            parts = dict(p.strip().split(":", 1) for p in line.split(";") if ":" in p)
            decl = parts.get("field", "").strip()
            words = decl.split()
            fname = words[-1].lstrip("*").split("[", 1)[0]
            if fname == "__syscall_nr":
                seen_nr = True
            elif seen_nr:
                # the arguments: one 8-byte slot each from offset 16 on.  Later
                # kernels append fields of their own (7.x: "__data_loc char[]
                # __filename_val", the string read at entry), which are not
                # arguments and must not be read as such.
                if fname.startswith("__") or parts.get("size") != "8" or \
                        parts.get("offset") != str(16 + 8 * len(names)):
                    break
                names.append(fname)
                ctype = " ".join(w for w in words[:-1] if w not in ("const", "volatile"))
                bits.append(0 if "*" in decl else _SIGNED_TYPES.get(ctype, 0))
        out = tuple(names) if seen_nr else None
        _SIGNED[tp] = tuple(bits)
    _PARAMS[tp] = out
    return out


def _signed(vals: Sequence[int], bits: Sequence[int]) -> List[int]:
    out = list(vals)
    for i, b in enumerate(bits[:len(out)]):
        if b:
            v = out[i] & ((1 << b) - 1)
            out[i] = v - (1 << b) if v >> (b - 1) else v
    return out


def resolve(name: Union[str, int], kernel: Optional[List[str]]) -> Tuple[str, int, str]:
    """(ABI name, number, tracepoint name) of a syscall the caller named."""
    nr = syscall_number(name)
    abi = syscall_name(nr) if isinstance(name, int) else _abi_name(name)
    tp = tracepoint_name(abi)
    if kernel is not None and tp not in kernel:
        import difflib
        raise TargetNotFoundError("syscall", abi, difflib.get_close_matches(tp, kernel, n=5),
                                  detail="this kernel has no syscalls:sys_enter_" + tp)
    return abi, nr, tp


class SyscallTracer(Tracer):
    """Trace completed syscalls: ``ev.name``, ``ev.id``, ``ev.args`` (named by
    the kernel's declaration, only as many as the syscall takes), ``ev.ret``
    (-errno on failure), ``ev.latency_ns`` plus the common header (``pid``,
    ``tid``, ``cpu``, ``comm``, ``ts_ns``).

    ``syscalls``: a name, a number or a list of them; None traces every
    syscall (raw_tp and tp_btf only).  ``kind``: tp, raw_tp or tp_btf (see
    the module docstring for what each costs).  ``measure_latency``: pair
    entry and exit to time each call (two programs per syscall); False runs
    one program per syscall, at exit, and ``ev.latency_ns`` is None.
    """

    object_name = "syscalls"
    event_struct = "syscall_event"
    record_internals = ("raw_args",)              # args names them
    # the exit program of each kind when entry and exit are paired
    EXIT_PROGRAMS = {TP: "sc_tp_exit", RAW_TP: "sc_raw_exit", TP_BTF: "sc_btf_exit"}

    def __init__(self, syscalls: Union[str, int, Sequence[Union[str, int]], None] = None,
                 kind: str = TP, *, measure_latency: bool = True, **kw: Any) -> None:
        if not isinstance(measure_latency, bool):
            raise BadTypeError(f"measure_latency must be a bool, not "
                               f"{type(measure_latency).__name__}")
        if kind not in KINDS:
            raise BadArgumentError(f"syscall tracer kind must be one of {', '.join(KINDS)}, "
                                   f"not {kind!r}")
        self.kind = kind
        self.measure_latency = measure_latency
        self._fell_back = ""
        if syscalls is None:
            if kind == TP:
                raise BadArgumentError("kind='tp' attaches one tracepoint pair per syscall: "
                                       "name the syscalls, or trace all with kind='raw_tp' "
                                       "or 'tp_btf'")
            wanted: List[Union[str, int]] = []
        elif isinstance(syscalls, (str, int)):
            wanted = [syscalls]
        else:
            wanted = list(syscalls)
            if not wanted:
                raise BadArgumentError("syscalls= is empty")
        kernel = kernel_syscalls()
        if kind == TP and kernel is None:
            from ..errors import NotSupportedError
            raise NotSupportedError("tp syscall tracing", "tracefs has no events/syscalls "
                                    "(CONFIG_FTRACE_SYSCALLS is off or tracefs is missing)",
                                    hint="use kind='raw_tp' or 'tp_btf'")
        self.syscalls: List[Tuple[str, int, str]] = [resolve(s, kernel) for s in wanted]
        abis = [s[0] for s in self.syscalls]
        names = (" or ".join([", ".join(abis[:-1]), abis[-1]]) if len(abis) > 1 else
                 abis[0] if abis else "all syscalls")
        tps = ", ".join(f"syscalls:sys_enter_{s[2]}/sys_exit_{s[2]}" for s in self.syscalls)
        self.why = WHY[kind].format(n=names, tps=tps)
        if not measure_latency:
            self.why += ("; without latency: one program per syscall, at exit "
                         "(arguments read from the saved user registers)")
        super().__init__(**kw)
        if self._fell_back:
            self.why += "; " + self._fell_back

    def _tp_enter_program(self, abi: str) -> str:
        params = syscall_params(abi)
        if params is None:
            raise TargetNotFoundError("syscall tracepoint format", f"sys_enter_{abi}",
                                      detail="tracefs gives no __syscall_nr field for it")
        return f"sc_tp_enter{min(len(params), 6)}"

    def _configure(self, open_obj: Any) -> None:
        # The in-kernel counters are SyscallStats' (it sizes them again): a
        # per-event tracer's copy is one entry, not 16,384 preallocated per CPU
        # (creating that map was 17 of the 20 ms of this object's load).
        open_obj.maps["stats"].max_entries = 1
        if not self.measure_latency:
            open_obj.only(EXIT_ONLY[self.kind])
            if self.kind != TP and self.syscalls:
                open_obj.config["cfg_filter_ids"] = 1
            return
        if self.kind == TP:
            self._tp_programs = {abi: self._tp_enter_program(abi) for abi, _nr, _tp in self.syscalls}
            open_obj.only(*sorted(set(self._tp_programs.values())), self.EXIT_PROGRAMS[TP])
            return
        open_obj.only(PROGRAMS[self.kind][0], self.EXIT_PROGRAMS[self.kind])
        if self.syscalls:
            open_obj.config["cfg_filter_ids"] = 1

    def _retry_after(self, error: Any) -> bool:
        """tp without latency on a kernel older than 5.15: the verifier does
        not know bpf_task_pt_regs (or, before 5.11, bpf_get_current_task_btf);
        pair entry and exit instead (then latency is measured after all)."""
        if self.kind != TP or self.measure_latency:
            return False
        if "does not know helper" not in str(error):
            return False
        self.measure_latency = True
        self._fell_back = ("this kernel lacks the helpers a tp program needs to read the "
                           "saved registers (bpf_get_current_task_btf 5.11, bpf_task_pt_regs "
                           "5.15), so entry and exit are paired (latency is measured)")
        return True

    def _after_load(self, obj: Any) -> None:
        if self.kind != TP:
            ids = obj.maps["syscall_ids"]
            for _abi, nr, _tp in self.syscalls:
                ids.update(nr, b"\x01")

    def _attach(self, obj: Any) -> None:
        if not self.measure_latency:
            prog = obj.programs[EXIT_ONLY[self.kind]]
            if self.kind == TP:
                for _abi, _nr, tp in self.syscalls:
                    self._link(prog.attach_tracepoint("syscalls", f"sys_exit_{tp}"))
            else:
                self._link(prog.attach())
            return
        exit_ = obj.programs[self.EXIT_PROGRAMS[self.kind]]
        if self.kind == TP:
            for abi, _nr, tp in self.syscalls:
                enter = obj.programs[self._tp_programs[abi]]
                self._link(enter.attach_tracepoint("syscalls", f"sys_enter_{tp}"))
                self._link(exit_.attach_tracepoint("syscalls", f"sys_exit_{tp}"))
        else:
            self._link(obj.programs[PROGRAMS[self.kind][0]].attach())
            self._link(exit_.attach())

    def _record_class(self, base: Type[Any]) -> Optional[Type[Any]]:
        fields = base._fields
        i_id, i_args = fields.index("id"), fields.index("args")
        i_lat = fields.index("latency_ns")
        timed = self.measure_latency
        arg_classes: Dict[int, Any] = {}
        getitem = tuple.__getitem__

        def arg_class(nr: int) -> Any:
            cls = arg_classes.get(nr)
            if cls is None:
                params = syscall_params(syscall_name(nr)) if nr in _NAME_OF_NR else None
                if params is None:
                    cls = tuple
                else:
                    nt = named_tuple(f"{syscall_name(nr)}_args", params)
                    signed = _SIGNED.get(tracepoint_name(syscall_name(nr)), ())
                    cls = (lambda vals, _nt=nt, _n=len(params), _s=signed:
                           _nt._make(_signed(vals[:_n], _s)))
                arg_classes[nr] = cls
            return cls

        def name(self: Any) -> str:
            return syscall_name(getitem(self, i_id))

        def args(self: Any) -> Any:
            return arg_class(getitem(self, i_id))(getitem(self, i_args))

        def raw_args(self: Any) -> Tuple[int, ...]:
            return getitem(self, i_args)

        def latency_ns(self: Any) -> Optional[int]:
            return getitem(self, i_lat) if timed else None

        return type("SyscallEvent", (base,), {
            "__slots__": (), "__doc__": "A syscall_event record with the syscall's name and "
                                        "its arguments named as the kernel declares them",
            "name": property(name), "args": property(args), "raw_args": property(raw_args),
            "latency_ns": property(latency_ns)})


# ---- in-kernel statistics ----------------------------------------------------------------

STAT_BUCKETS = 168           # SC_HIST_BUCKETS in syscalls.bpf.c
STAT_VALUE_SIZE = 4 * 8 + 16 + 4 * STAT_BUCKETS      # sizeof(struct sc_stat), checked at load


def stat_bucket(ns: int) -> int:
    """The latency histogram bucket of ``ns`` (syscalls.bpf.c's
    sc_hist_bucket): ns itself below 8, else the bit length and the two bits
    after the leading one -- 4 buckets per power of two, each at most 25%
    wider than its lower bound."""
    if ns < 8:
        return max(ns, 0)
    bl = ns.bit_length()
    return min((bl << 2) | ((ns >> (bl - 3)) & 3), STAT_BUCKETS - 1)


def stat_bucket_upper(b: int) -> int:
    """The largest latency (ns) that falls in bucket ``b``."""
    if b < 8:
        return b
    bl, frac = b >> 2, b & 3
    return ((5 + frac) << (bl - 3)) - 1


def percentile_of(hist: Sequence[int], q: float) -> Optional[int]:
    """The ``q`` quantile (0..1) of a latency histogram, as the upper bound of
    the bucket it falls in (so never below the true value, at most ~25%
    above it); None for an empty histogram."""
    total = sum(hist)
    if not total:
        return None
    want = q * total
    run = 0
    for b, n in enumerate(hist):
        if n:
            run += n
            if run >= want:
                return stat_bucket_upper(b)
    return stat_bucket_upper(len(hist) - 1)


class SyscallCounters(NamedTuple):
    """Counters of one (process, syscall): ``pid``, ``id``, ``name``,
    ``comm``, ``calls``, ``errors``, ``total_ns``, ``max_ns``, ``hist`` (the
    latency histogram, a tuple of STAT_BUCKETS counts; see stat_bucket)."""

    pid: int
    id: int
    name: str
    comm: str
    calls: int
    errors: int
    total_ns: int
    max_ns: int
    hist: Tuple[int, ...]

    def percentile(self, q: float) -> Optional[int]:
        """Latency quantile ``q`` (0..1) from the histogram; see percentile_of."""
        return percentile_of(self.hist, q)

    def __repr__(self) -> str:           # without the 168 histogram counts
        return (f"SyscallCounters(pid={self.pid}, name={self.name!r}, comm={self.comm!r}, "
                f"calls={self.calls}, errors={self.errors}, total_ns={self.total_ns}, "
                f"max_ns={self.max_ns})")


# The name SyscallCounters had before 0.2 (one letter from SyscallStats).
SyscallStat = SyscallCounters


class SyscallStats(SyscallTracer):
    """Syscall statistics kept in the kernel: per (process, syscall), the
    calls, errors, total and largest latency and a latency histogram, added up
    by the exit program instead of emitted as records.  Nothing per call
    reaches Python, so however fast syscalls come none is lost to a slow
    reader (a record-per-call tracer loses what its reader cannot keep up
    with); the cost on the traced path is the entry/exit pair's without the
    ring record.

    The same arguments as :class:`SyscallTracer` (``syscalls``, ``kind``,
    ``pid``, ``comm``), always timed.  :meth:`snapshot` reads the counters,
    which only grow (subtract two snapshots for an interval);
    :attr:`dropped` counts calls that completed but could not be counted
    because ``max_keys`` (process, syscall) pairs were already present.

    The counters are preallocated per CPU: ``max_keys`` x 720 bytes x the
    possible CPUs.  By default ``max_keys`` is what fits in 64 MiB, at most
    16384 and at least 1024 (16384 with up to 5 CPUs, 1456 with 64).
    """

    EXIT_PROGRAMS = {TP: "sc_tp_stat_exit", RAW_TP: "sc_raw_stat_exit",
                     TP_BTF: "sc_btf_stat_exit"}

    MEMORY_BUDGET = 64 << 20

    def __init__(self, syscalls: Union[str, int, Sequence[Union[str, int]], None] = None,
                 kind: str = TP, *, max_keys: Optional[int] = None, **kw: Any) -> None:
        if max_keys is None:
            from ..maps import possible_cpus
            per_key = STAT_VALUE_SIZE * possible_cpus()
            max_keys = max(1024, min(16384, self.MEMORY_BUDGET // per_key))
        if isinstance(max_keys, bool) or not isinstance(max_keys, int):
            raise BadTypeError(f"max_keys must be an int, not {type(max_keys).__name__}")
        if max_keys < 1:
            raise BadArgumentError("max_keys must be a positive int")
        if "measure_latency" in kw:
            raise BadArgumentError("SyscallStats always measures latency")
        self.max_keys = max_keys
        kw.setdefault("ring_size", 4096)         # the events ring is not used
        super().__init__(syscalls, kind, measure_latency=True, **kw)
        self.why += "; counted in the kernel per process and syscall (no record per call)"
        self._stat_dtype = self.object.btf.struct_layout("sc_stat").numpy_dtype()

    def _configure(self, open_obj: Any) -> None:
        super()._configure(open_obj)
        open_obj.maps["stats"].max_entries = self.max_keys

    def snapshot(self) -> Dict[Tuple[int, int], SyscallCounters]:
        """The counters now, keyed by (pid, syscall number), summed over CPUs."""
        self._check()
        import numpy as np
        dt = self._stat_dtype
        out: Dict[Tuple[int, int], SyscallCounters] = {}
        # One bpf() call for the whole map where the kernel has batch lookups
        # (5.6+), one per entry otherwise (pytracers.mapbatch).
        batch = self.object.maps["stats"].lookup_batch(key_dtype=np.dtype([("pid", "<u4"),
                                                                           ("nr", "<u4")]),
                                                       value_dtype=dt)
        if not len(batch):
            return out
        arr: Any = batch.values                      # (keys, CPUs) of struct sc_stat
        if arr.ndim == 1:
            arr = arr[:, None]
        calls = arr["calls"].sum(axis=1)
        errors = arr["errors"].sum(axis=1)
        total = arr["total_ns"].sum(axis=1)
        mx = arr["max_ns"].max(axis=1)
        hist = arr["hist"].sum(axis=1)
        # the command as seen by the CPU that counted the most calls (first such CPU)
        order = np.argsort(-arr["calls"], axis=1, kind="stable")
        comms = np.take_along_axis(arr["comm"], order, axis=1)
        for i, (pid, nr) in enumerate(batch.keys.tolist()):
            comm = ""
            for c in comms[i]:
                comm = bytes(c).split(b"\0", 1)[0].decode("utf-8", "replace")
                if comm:
                    break
            out[(pid, nr)] = SyscallCounters(
                pid, nr, syscall_name(nr), comm, int(calls[i]), int(errors[i]), int(total[i]),
                int(mx[i]), tuple(int(x) for x in hist[i]))
        return out

    @property
    def dropped(self) -> int:
        """Completed calls not counted: the stats map was full."""
        self._check()
        return int(self.object.maps["stats_dropped"].sum_percpu_u64())

    @property
    def lost(self) -> int:
        """For a stats tracer, the calls it could not count (see dropped)."""
        return self.dropped
