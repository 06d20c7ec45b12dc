"""The probe-kind registry (pytracers/kinds.py) is the one place kinds are named."""
from __future__ import annotations

import io
import os
import tokenize

import pytest

from pytracers import kinds
from pytracers.errors import BadArgumentError

pytestmark = pytest.mark.kernel_independent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "pytracers")
# generated data (build.py's stored inspection holds section names, not code;
# the syscall table names the uprobe/uretprobe syscalls, not probe kinds)
GENERATED = ("pytracers/elf/_inspected.py", "pytracers/tracers/_x86_64_syscalls.py")


def _string_literals(path: str):
    with open(path, "rb") as f:
        for tok in tokenize.tokenize(io.BytesIO(f.read()).readline):
            if tok.type == tokenize.STRING:
                yield tok.start[0], tok.string


def test_each_kind_is_spelled_as_a_literal_only_in_kinds_py():
    """grep for a kind's name as a whole string literal finds only kinds.py."""
    names = {repr(k) for k in kinds.KINDS} | {f'"{k}"' for k in kinds.KINDS}
    found = []
    for dirpath, _dirs, files in os.walk(PKG):
        for fn in files:
            path = os.path.join(dirpath, fn)
            rel = os.path.relpath(path, ROOT)
            if not fn.endswith(".py") or rel in ("pytracers/kinds.py", *GENERATED):
                continue
            for line, lit in _string_literals(path):
                if lit in names:
                    found.append(f"{os.path.relpath(path, ROOT)}:{line}: {lit}")
    assert not found, "probe kind names spelled outside kinds.py:\n" + "\n".join(found)


def test_section_prefixes_map_to_their_kinds():
    cases = {
        "tracepoint/syscalls/sys_enter_openat": kinds.TP, "tp/sched/sched_switch": kinds.TP,
        "raw_tracepoint/sys_enter": kinds.RAW_TP, "raw_tp/sys_enter": kinds.RAW_TP,
        "raw_tp.w/x": kinds.RAW_TP, "raw_tracepoint.w/x": kinds.RAW_TP,
        "tp_btf/sched_switch": kinds.TP_BTF, "kprobe/do_unlinkat": kinds.KPROBE,
        "kretprobe/do_unlinkat": kinds.KRETPROBE, "kprobe.multi/vfs_*": kinds.KPROBE_MULTI,
        "kretprobe.multi": kinds.KRETPROBE_MULTI, "fentry/vfs_read": kinds.FENTRY,
        "fentry.s/x": kinds.FENTRY, "fexit/vfs_read": kinds.FEXIT, "fexit.s/x": kinds.FEXIT,
        "fmod_ret/security_file_open": kinds.FMOD_RET, "fmod_ret.s/x": kinds.FMOD_RET,
        "?fentry/vfs_read": kinds.FENTRY, "uprobe": kinds.UPROBE, "uprobe.s": kinds.UPROBE,
        "uretprobe/x": kinds.URETPROBE, "uretprobe.s": kinds.URETPROBE,
        # sections of no probe kind keep their libbpf prefix
        "xdp": "xdp", "lsm/file_open": "lsm", "iter/task": "iter",
    }
    for section, kind in cases.items():
        assert kinds.kind_of_section(section) == kind, section


def test_every_section_prefix_is_one_libbpf_knows():
    from pytracers.elf.inspect import is_program_section
    for k in kinds.KINDS.values():
        for s in k.sections:
            assert is_program_section(s + "/x"), (k.name, s)


def test_twins_and_flags_are_consistent():
    for k in kinds.KINDS.values():
        if k.twin is not None:
            twin = kinds.get(k.twin)
            assert twin.twin == k.name and twin.retprobe != k.retprobe, k.name
            assert twin.attach == k.attach and twin.link == k.link
        assert k.min_kernel.count(".") == 1
    assert set(kinds.TRAMPOLINE_KINDS) < set(kinds.BTF_TARGET_KINDS)
    assert kinds.get(kinds.TP_BTF).target_fixed_at_load
    assert not kinds.get(kinds.KPROBE).target_fixed_at_load


def test_every_kind_has_an_attach_method_on_program():
    from pytracers.program import Program
    for k in kinds.KINDS.values():
        assert callable(getattr(Program, Program.ATTACH[k.attach], None)), k.name


def test_the_prober_reports_the_probed_kinds_in_registry_order():
    from pytracers import features
    assert features.PROBE_KINDS == kinds.PROBED_KINDS
    probed = [n for n in features.FEATURES if n in kinds.KINDS]
    assert tuple(probed) == kinds.PROBED_KINDS


def test_unknown_kind_is_a_bad_argument_naming_the_kinds():
    with pytest.raises(BadArgumentError, match="unknown probe kind 'kprob'.*kprobe"):
        kinds.get("kprob")
