"""Errors on users' own objects name the culprit, quote libbpf, hint only at
kinds this kernel has, keep libbpf off stderr, and a failed load frees its
buffers at once (tests/objects/multi*.bpf.o)."""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pytracers
from pytracers import _errmap, kinds
from pytracers.errors import (LoadError, NotSupportedError, PytracersError, TargetNotFoundError,
                              VerifierError)

from conftest import VM_KERNEL, expected

OBJECTS = Path(__file__).parent / "objects"
MULTI = str(OBJECTS / "multi.bpf.o")
BADMAP = str(OBJECTS / "multi_badmap.bpf.o")
ROOT = Path(__file__).resolve().parent.parent


def _load(path: str, *enable: str) -> "pytracers.Object":
    o = pytracers.open(path)
    for name in enable:
        o.programs[name].autoload = True
    return o.load()


def test_verifier_rejection_names_the_program_among_many():
    """A multi-program object with one program every verifier rejects: the
    error names that program and keeps the log."""
    with pytest.raises(VerifierError) as ei:
        _load(MULTI, "bad_deref")
    assert ei.value.program == "bad_deref"
    assert "'bad_deref'" in str(ei.value)
    assert "map_value_or_null" in ei.value.log


def test_refused_fentry_among_tracepoints_names_the_program():
    """fentry refused without a verifier log (this host: EPERM) names which
    program; where fentry works the same object loads and the tracepoint
    programs beside it too."""
    try:
        obj = _load(MULTI, "on_vfs_read")
    except NotSupportedError as e:
        if VM_KERNEL and expected(kinds.FENTRY):
            pytest.fail(f"fentry should load on VM kernel {VM_KERNEL}: {e}")
        assert e.feature == kinds.FENTRY
        assert e.program == "on_vfs_read"
        assert "program 'on_vfs_read'" in str(e)
        assert "kind=" not in str(e)
        return
    with obj:
        assert set(obj.programs) == {"count_getpid", "count_getppid", "count_enter",
                                     "on_vfs_read"}


def test_missing_fentry_target_is_target_not_found():
    """A section naming a function no kernel has: TargetNotFoundError naming
    the function and the program, quoting libbpf -- not "ESRCH No such process"."""
    with pytest.raises(TargetNotFoundError) as ei:
        _load(MULTI, "on_missing")
    e = ei.value
    assert e.name == "pt_no_such_function_xyz"
    assert e.what == "kernel function"
    assert "program 'on_missing'" in str(e)
    assert "failed to find kernel BTF type ID of 'pt_no_such_function_xyz'" in str(e)
    assert "ESRCH" not in str(e) and "No such process" not in str(e)
    assert isinstance(e.suggestions, list)


def test_map_creation_failure_names_the_map_and_quotes_libbpf():
    with pytest.raises(LoadError) as ei:
        _load(BADMAP)
    e = ei.value
    assert e.map == "refused"
    assert e.errno == 22          # EINVAL: an array map takes no BPF_F_NO_PREALLOC
    assert "create map 'refused'" in str(e)
    assert "map 'refused': failed to create" in str(e)
    assert "failed to load object" not in str(e)


def test_program_turned_off_before_load_says_so():
    with _load(MULTI) as obj:
        assert "on_vfs_read" not in obj.programs
        with pytest.raises(TargetNotFoundError) as ei:
            obj.programs["on_vfs_read"]
        assert "not loaded (autoload was off)" in str(ei.value)
        assert "not found" not in str(ei.value)
        with pytest.raises(TargetNotFoundError) as ei:       # a name it never had
            obj.programs["count_getpidd"]
        assert "not found" in str(ei.value)
        assert "count_getpid" in ei.value.suggestions


def test_hints_name_only_kinds_known_present(monkeypatch):
    """fentry's hint names kprobe only where kprobes exist and vice versa; no
    hint says `kind=` (tracer API, not object API)."""
    monkeypatch.setattr(_errmap, "_known", {})
    monkeypatch.setattr(_errmap, "_oracle", [])
    monkeypatch.setattr(_errmap, "no_kprobes_reason", lambda: "CONFIG_KPROBES is off")
    _errmap.note_kind(kinds.FENTRY, False)
    for kind in kinds.KINDS:
        hint = _errmap.alternative_hint(kind) or ""
        assert "kind=" not in hint
        assert "kprobe" not in hint and "fentry" not in hint, (kind, hint)
    assert "or boot without" in (_errmap.trampoline_refused(kinds.FENTRY, 1).hint or "")
    monkeypatch.setattr(_errmap, "no_kprobes_reason", lambda: None)
    _errmap.note_kind(kinds.FENTRY, True)
    assert "a kprobe program" in _errmap.alternative_hint(kinds.FENTRY)
    assert "a kretprobe program" in _errmap.alternative_hint(kinds.FEXIT)
    assert "a fentry program" in _errmap.alternative_hint(kinds.KPROBE)
    # the prober's cache, when it has an answer
    _errmap.set_kind_oracle(lambda k: False if k == kinds.FENTRY else None)
    monkeypatch.setattr(_errmap, "_known", {})
    assert _errmap.alternative_hint(kinds.KPROBE) == \
        "use a tracepoint (tp, raw_tp or tp_btf) where one covers the event"


def test_real_refusals_do_not_recommend_each_other():
    """On this host both kprobes and fentry are absent: after fentry was
    refused, the kprobe error does not suggest fentry, nor fentry's kprobe."""
    if _errmap.no_kprobes_reason() is None:
        pytest.skip(f"this kernel has kprobes ({os.uname().release})")
    try:
        _load(MULTI, "on_vfs_read").close()
        pytest.skip("fentry loads here")
    except NotSupportedError as e:
        assert "kprobe" not in (e.hint or "")
    kp = pytracers.open(pytracers.object_path("kprobe"))
    kp.only("fn_kprobe")
    with kp.load() as obj, pytest.raises(NotSupportedError) as ei:
        obj.programs["fn_kprobe"].attach_kprobe("vfs_read")
    assert "fentry" not in (ei.value.hint or "") and "kind=" not in (ei.value.hint or "")


_QUIET_CHILD = r"""
import json, logging, sys
records = []
class Keep(logging.Handler):
    def emit(self, r): records.append((r.levelname, r.getMessage()))
logging.getLogger("pytracers.libbpf").addHandler(Keep())
logging.getLogger("pytracers.libbpf").setLevel(logging.DEBUG)
logging.getLogger("pytracers.libbpf").propagate = False
import pytracers
from pytracers.errors import PytracersError
out = {}
for name, path, prog in [("fentry", sys.argv[1], "on_vfs_read"), ("verifier", sys.argv[1], "bad_deref"),
                         ("missing", sys.argv[1], "on_missing"), ("map", sys.argv[2], None)]:
    o = pytracers.open(path)
    if prog:
        o.programs[prog].autoload = True
    try:
        o.load().close()
        out[name] = "loaded"
    except PytracersError as e:
        out[name] = type(e).__name__
if sys.argv[3] == "kprobe":
    o = pytracers.open(pytracers.object_path("kprobe"))
    o.only("fn_kprobe")
    with o.load() as obj:
        try:
            obj.programs["fn_kprobe"].attach_kprobe("pt_no_such_function_xyz")
        except PytracersError as e:
            out["kprobe"] = type(e).__name__
out["records"] = records
print(json.dumps(out))
"""


@pytest.mark.parametrize("logging_setup", ["none", "basicConfig"])
def test_libbpf_messages_never_reach_stderr(logging_setup):
    """What libbpf says while a load or attach fails ("try raising 'ulimit
    -l'", "failed to create kprobe ... perf event") goes to the
    pytracers.libbpf logger at DEBUG only: fd 2 of the process stays empty,
    whether or not the application configured logging."""
    code = _QUIET_CHILD
    if logging_setup == "basicConfig":
        code = "import logging; logging.basicConfig(level=logging.WARNING)\n" + code
    kp = "kprobe" if _errmap.no_kprobes_reason() is None else "-"
    res = subprocess.run([sys.executable, "-c", code, MULTI, BADMAP, kp], capture_output=True,
                         text=True, cwd=str(ROOT), timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    out = json.loads(res.stdout)
    assert out["verifier"] == "VerifierError"
    assert out["missing"] == "TargetNotFoundError"
    assert out["map"] == "LoadError"
    assert out["fentry"] in ("loaded", "NotSupportedError")
    if kp == "kprobe":
        assert out["kprobe"] == "TargetNotFoundError"
    said = [m for lvl, m in out["records"]]
    assert all(lvl == "DEBUG" for lvl, m in out["records"]
               if "failed" in m or "ulimit" in m), out["records"]
    assert any("map 'refused': failed to create" in m for m in said)
    assert any("failed to find kernel BTF type ID of 'pt_no_such_function_xyz'" in m
               for m in said)


def _fail_once() -> None:
    o = pytracers.open(MULTI)
    o.programs["bad_deref"].autoload = True
    try:
        o.load()
    except PytracersError:
        pass


def test_failed_load_leaves_no_cyclic_garbage():
    """A failed load (and the open object it consumed) is freed by reference
    counting alone: nothing reaches the cycle collector."""
    _fail_once()
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        _fail_once()
        gc.collect()
        garbage = [type(x).__name__ for x in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was:
            gc.enable()
    assert garbage == []


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def test_failed_loads_do_not_grow_rss_without_gc():
    """100 failed loads with the cycle collector off: RSS stays within 8 MB
    (before the fix each one kept ~1.4 MB of verifier-log buffers)."""
    _fail_once()
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        start = _rss_mb()
        for _ in range(100):
            _fail_once()
        grown = _rss_mb() - start
    finally:
        if was:
            gc.enable()
    assert grown < 8, f"RSS grew {grown:.1f} MB over 100 failed loads"
