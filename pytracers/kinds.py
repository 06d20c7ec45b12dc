"""Every probe kind pytracers knows, named once.

A probe kind is how a BPF program meets the kernel: a tracepoint (``tp``), a
raw tracepoint (``raw_tp``), a BTF tracepoint (``tp_btf``), a kprobe or
kretprobe, a multi-kprobe, a BPF trampoline (``fentry``, ``fexit``,
``fmod_ret``), or a sampling perf event (``perf_event``: a timer or counter
overflowing at a frequency on every CPU), and in user space a uprobe, a
uretprobe or a USDT probe of a user program (``usdt``).  This module is the
only place that spells their names; every module that lists kinds,
dispatches on them or explains them reads :data:`KINDS`:

* :meth:`pytracers.program.Program.attach` dispatches on :attr:`ProbeKind.attach`;
* :func:`pytracers.features.probe` builds its report from the kinds whose
  :attr:`ProbeKind.feature_program` is set;
* the command line's ``KIND:TARGET`` prefixes are :data:`KINDS`' names;
* :func:`kind_of_section` maps a program's ELF section to its kind.

A new probe kind is one :class:`ProbeKind` entry here, its attach method on
``Program`` (if no existing ``attach`` style fits), its BPF program in
``bpf_src/`` and, to be probed, a ``feature_program`` in ``features.bpf.c``.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Tuple

__all__ = [
    "ProbeKind", "KINDS", "get", "kind_of_section",
    "TP", "RAW_TP", "TP_BTF", "KPROBE", "KRETPROBE", "KPROBE_MULTI", "KRETPROBE_MULTI",
    "FENTRY", "FEXIT", "FMOD_RET", "UPROBE", "URETPROBE", "USDT", "PERF_EVENT",
    "PERF_EVENT_LINK", "BPF_LINK", "ATTACH_TRACEPOINT", "ATTACH_RAW_TRACEPOINT",
    "ATTACH_FUNCTION", "ATTACH_FUNCTION_GLOB", "ATTACH_BTF", "ATTACH_USER_FUNCTION",
    "ATTACH_USDT", "ATTACH_PERF_EVENT",
    "PROBED_KINDS", "TRACEPOINT_KINDS", "KPROBE_KINDS", "MULTI_KINDS", "TRAMPOLINE_KINDS",
    "BTF_TARGET_KINDS", "UPROBE_KINDS",
]

TP = "tp"
RAW_TP = "raw_tp"
TP_BTF = "tp_btf"
KPROBE = "kprobe"
KRETPROBE = "kretprobe"
KPROBE_MULTI = "kprobe_multi"
KRETPROBE_MULTI = "kretprobe_multi"
FENTRY = "fentry"
FEXIT = "fexit"
FMOD_RET = "fmod_ret"
UPROBE = "uprobe"
URETPROBE = "uretprobe"
USDT = "usdt"
PERF_EVENT = "perf_event"

# How the kernel holds an attachment (what ``Link.pin`` can pin before 5.15).
PERF_EVENT_LINK = "perf_event"    # a perf event with the program set on it
BPF_LINK = "bpf_link"             # a BPF link object (pinnable since 5.7)

# Attach styles: which Program method attaches a kind (Program.ATTACH maps them).
ATTACH_TRACEPOINT = "tracepoint"      # attach_tracepoint(category, name)
ATTACH_RAW_TRACEPOINT = "raw_tracepoint"  # attach_raw_tracepoint(name)
ATTACH_FUNCTION = "function"          # attach_kprobe(function)
ATTACH_FUNCTION_GLOB = "function_glob"  # attach_kprobe_multi(pattern | functions)
ATTACH_BTF = "btf"                    # attach_trace(): the target was fixed before load
ATTACH_USER_FUNCTION = "user_function"  # attach_uprobe(binary, symbol_or_offset, pid=)
ATTACH_USDT = "usdt"                  # attach_usdt(binary, provider, name)
ATTACH_PERF_EVENT = "perf_event"      # attach_perf_event(event): one perf event per CPU


class ProbeKind(NamedTuple):
    """One probe kind: what it attaches to and how."""

    name: str
    """The kind's name, as users write it (``kind="fentry"``, ``fentry:vfs_read``)."""
    sections: Tuple[str, ...]
    """libbpf's ELF section prefixes for programs of this kind (``SEC("fentry/...")``)."""
    attach: str
    """The attach style: which ``Program.attach_*`` method attaches it."""
    link: str
    """:data:`PERF_EVENT_LINK` or :data:`BPF_LINK` (on the oldest kernels we support)."""
    target: str
    """What the kind attaches to, as a user writes it (messages and help)."""
    min_kernel: str
    """The first upstream kernel release that has the kind."""
    trampoline: bool = False
    """A BPF trampoline (fentry family): refused by some kernels and security policies."""
    retprobe: bool = False
    """Runs when the target returns."""
    twin: Optional[str] = None
    """The entry kind of a return kind and vice versa (kprobe <-> kretprobe)."""
    feature_program: Optional[str] = None
    """The program of ``features.bpf.o`` that :func:`pytracers.features.probe` loads
    to find out whether this kernel has the kind (None: not probed on its own)."""

    @property
    def target_fixed_at_load(self) -> bool:
        """BTF-typed kinds attach to the target chosen before load (``set_attach_target``)."""
        return self.attach == ATTACH_BTF


_ALL = (
    ProbeKind(TP, ("tracepoint", "tp"), ATTACH_TRACEPOINT, PERF_EVENT_LINK,
              "a tracepoint, 'category:name'", "4.7", feature_program="probe_tp"),
    ProbeKind(RAW_TP, ("raw_tracepoint", "raw_tp", "raw_tracepoint.w", "raw_tp.w"),
              ATTACH_RAW_TRACEPOINT, BPF_LINK,
              "a raw tracepoint, its name without the category",
              "4.17", feature_program="probe_raw_tp"),
    ProbeKind(TP_BTF, ("tp_btf",), ATTACH_BTF, BPF_LINK,
              "a tracepoint by name, typed by the kernel's BTF", "5.5",
              feature_program="probe_tp_btf"),
    ProbeKind(KPROBE, ("kprobe",), ATTACH_FUNCTION, PERF_EVENT_LINK, "a kernel function", "4.1",
              twin=KRETPROBE, feature_program="probe_kprobe"),
    ProbeKind(KRETPROBE, ("kretprobe",), ATTACH_FUNCTION, PERF_EVENT_LINK, "a kernel function",
              "4.1", retprobe=True, twin=KPROBE, feature_program="probe_kretprobe"),
    ProbeKind(KPROBE_MULTI, ("kprobe.multi",), ATTACH_FUNCTION_GLOB, BPF_LINK,
              "kernel functions matching a glob", "5.18", twin=KRETPROBE_MULTI,
              feature_program="probe_kprobe_multi"),
    ProbeKind(KRETPROBE_MULTI, ("kretprobe.multi",), ATTACH_FUNCTION_GLOB, BPF_LINK,
              "kernel functions matching a glob", "5.18", retprobe=True, twin=KPROBE_MULTI),
    ProbeKind(FENTRY, ("fentry", "fentry.s"), ATTACH_BTF, BPF_LINK, "a kernel function with BTF",
              "5.5", trampoline=True, twin=FEXIT, feature_program="probe_fentry"),
    ProbeKind(FEXIT, ("fexit", "fexit.s"), ATTACH_BTF, BPF_LINK, "a kernel function with BTF",
              "5.5", trampoline=True, retprobe=True, twin=FENTRY,
              feature_program="probe_fexit"),
    ProbeKind(FMOD_RET, ("fmod_ret", "fmod_ret.s"), ATTACH_BTF, BPF_LINK,
              "a security_* hook or an error-injection function", "5.7", trampoline=True,
              feature_program="probe_fmod_ret"),
    # BPF programs on uprobes: perf_event_open with the uprobe PMU (4.17); the
    # target is a file and an offset in it ("BINARY:SYMBOL" where one string is asked).
    ProbeKind(UPROBE, ("uprobe", "uprobe.s"), ATTACH_USER_FUNCTION, PERF_EVENT_LINK,
              "a user-space function, 'BINARY:SYMBOL'", "4.17", twin=URETPROBE,
              feature_program="probe_uprobe"),
    ProbeKind(URETPROBE, ("uretprobe", "uretprobe.s"), ATTACH_USER_FUNCTION, PERF_EVENT_LINK,
              "a user-space function, 'BINARY:SYMBOL'", "4.17", retprobe=True, twin=UPROBE,
              feature_program="probe_uretprobe"),
    # libbpf's USDT support (usdt.bpf.h) reads arguments with
    # bpf_probe_read_kernel/_user (5.5) and counts semaphores through the
    # uprobe's ref_ctr_offset (4.20).  It uses BPF cookies (5.15) to find a
    # probe's argument spec; before 5.15 it falls back to a map keyed by the
    # probe's address, which works for executables and for a library in one
    # process (pid=), but not for a shared library system-wide.
    ProbeKind(USDT, ("usdt", "usdt.s"), ATTACH_USDT, PERF_EVENT_LINK,
              "a USDT probe of a user program, 'binary:provider:name'", "5.5",
              feature_program="probe_usdt"),
    ProbeKind(PERF_EVENT, ("perf_event",), ATTACH_PERF_EVENT, PERF_EVENT_LINK,
              "a perf event sampled on every CPU: 'cpu-clock', 'cycles', ... "
              "(at a frequency)", "4.9", feature_program="probe_perf_event"),
)

KINDS: Dict[str, ProbeKind] = {k.name: k for k in _ALL}
"""Every probe kind by name, in the order reports list them."""

PROBED_KINDS: Tuple[str, ...] = tuple(k.name for k in _ALL if k.feature_program)
"""The kinds :func:`pytracers.features.probe` reports on, in report order."""
TRACEPOINT_KINDS: Tuple[str, ...] = (TP, RAW_TP, TP_BTF)
"""The kinds that reach a tracepoint (its record, its raw arguments, its BTF types)."""
KPROBE_KINDS: Tuple[str, ...] = tuple(k.name for k in _ALL if k.attach == ATTACH_FUNCTION)
MULTI_KINDS: Tuple[str, ...] = tuple(k.name for k in _ALL if k.attach == ATTACH_FUNCTION_GLOB)
TRAMPOLINE_KINDS: Tuple[str, ...] = tuple(k.name for k in _ALL if k.trampoline)
BTF_TARGET_KINDS: Tuple[str, ...] = tuple(k.name for k in _ALL if k.attach == ATTACH_BTF)
"""Kinds whose target is fixed before load (``OpenProgram.set_attach_target``)."""

UPROBE_KINDS: Tuple[str, ...] = tuple(k.name for k in _ALL
                                     if k.attach == ATTACH_USER_FUNCTION)
"""Kinds that attach to a function of a user-space binary."""

_BY_SECTION: Dict[str, str] = {s: k.name for k in _ALL for s in k.sections}


def get(name: str) -> ProbeKind:
    """The :class:`ProbeKind` called ``name``; BadArgumentError names the known kinds."""
    try:
        return KINDS[name]
    except (KeyError, TypeError):
        from .errors import BadArgumentError
        raise BadArgumentError(f"unknown probe kind {name!r}; kinds: "
                               f"{', '.join(KINDS)}") from None


def kind_of_section(section: str) -> str:
    """The probe kind a program's ELF section denotes (``"fentry.s/x"`` -> ``fentry``);
    for a section of no probe kind (``xdp``, ``lsm/...``) its libbpf prefix."""
    head = section.lstrip("?").split("/", 1)[0]
    return _BY_SECTION.get(head, head)
