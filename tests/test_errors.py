"""The error model, on real kernel refusals.

- A refused map operation raises MapError, a refused link pin LinkError, a
  refused test run TestRunError; a failed load is still a LoadError.  All of
  them are BpfOperationError, a PytracersError and an OSError carrying the
  kernel's errno, and none of the first three is a LoadError.
- A key missing from a map (or a name missing from the feature list) is a
  KeyNotFoundError: a PytracersError and a KeyError.
- Errnos and map types are named, not written as numbers, and ENOTSUPP is
  defined once (in pytracers.errors).
"""
from __future__ import annotations

import ast
import errno
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
from typing import Any, Callable, List, Tuple

import pytest

import pytracers
from pytracers import errors as E
from pytracers import features
from pytracers.maps import BPF_EXIST, BPF_NOEXIST, MAP_TYPES, MapType

from conftest import NO_BPFFS_ENV, VM_KERNEL

EXEC = pytracers.object_path("exec")
BENCH = pytracers.object_path("bench")
SYSCALLS = pytracers.object_path("syscalls")
PKG = pathlib.Path(pytracers.__file__).parent


def raised(fn: Callable[[], Any]) -> BaseException:
    """The exception ``fn`` raises (failing the test if it returns)."""
    try:
        fn()
    except BaseException as e:      # the caller checks what it is
        return e
    pytest.fail(f"{fn} returned instead of raising")


def assert_bpf_error(exc: BaseException, cls: type, err: int, *words: str) -> None:
    """``exc`` is exactly a ``cls`` for errno ``err`` and says ``words``."""
    assert type(exc) is cls, repr(exc)
    assert isinstance(exc, E.BpfOperationError)
    assert isinstance(exc, E.PytracersError) and isinstance(exc, OSError)
    assert exc.errno == err, (exc, errno.errorcode.get(exc.errno))
    assert f"[{E.errno_name(err)}]" in str(exc), str(exc)
    for w in words:
        assert w in str(exc), (w, str(exc))
    if cls is not E.LoadError:
        assert not isinstance(exc, E.LoadError), "a map/link/test-run error is not a load error"


# ---- maps -----------------------------------------------------------------------

def test_map_update_refused_by_the_kernel_is_a_map_error():
    """BPF_NOEXIST on a present key (EEXIST) and BPF_EXIST on an absent one
    (ENOENT) are the kernel's refusals, reported as MapError with the map's
    name; `except LoadError` does not catch them, `except OSError` does."""
    with pytracers.open(EXEC).load() as obj:
        pending = obj.maps["pending"]
        value = b"\1" * pending.value_size
        pending.update(3, value)
        e = raised(lambda: pending.update(3, value, BPF_NOEXIST))
        assert_bpf_error(e, E.MapError, errno.EEXIST, "update map 'pending'")
        e = raised(lambda: pending.update(4, value, BPF_EXIST))
        assert_bpf_error(e, E.MapError, errno.ENOENT, "update map 'pending'")
        assert pending.lookup(3) == value and pending.lookup(4) is None


def test_update_of_the_frozen_rodata_map_is_a_map_error():
    """libbpf freezes .rodata at load: the kernel refuses a write from user
    space with EPERM, and the error says how to configure it instead."""
    with pytracers.open(EXEC).load() as obj:
        ro = obj.maps["exec.rodata"]
        before = ro.lookup(0)
        e = raised(lambda: ro.update(0, b"\0" * ro.value_size))
        assert_bpf_error(e, E.MapError, errno.EPERM, "'exec.rodata'", "OpenObject.config")
        assert ro.lookup(0) == before


def test_missing_key_is_key_not_found():
    """m[key] and del m[key] of an absent key raise KeyNotFoundError, a
    KeyError whose args[0] is the key, naming the map."""
    with pytracers.open(EXEC).load() as obj:
        pending = obj.maps["pending"]
        for op in (lambda: pending[12345], lambda: pending.__delitem__(12345)):
            e = raised(op)
            assert type(e) is E.KeyNotFoundError
            assert isinstance(e, KeyError) and isinstance(e, E.PytracersError)
            assert e.args[0] == 12345 and e.key == 12345
            assert str(e) == "12345 is not in map 'pending'"


@pytest.mark.kernel_independent
def test_unknown_feature_is_key_not_found():
    """features.probe_one() of a name it does not probe: a KeyError that
    lists the names (raised before anything is probed)."""
    e = raised(lambda: features.probe_one("no_such_feature"))
    assert isinstance(e, E.KeyNotFoundError) and isinstance(e, KeyError)
    assert e.args[0] == "no_such_feature" and "raw_tp" in str(e)


# ---- pins -----------------------------------------------------------------------

def _bpffs() -> bool:
    return os.path.ismount("/sys/fs/bpf")


def _pin_path(tag: str) -> str:
    return f"/sys/fs/bpf/pytracers_errors_{os.getpid()}_{tag}"


def _raw_tp_object() -> Any:
    o = pytracers.open(SYSCALLS)
    o.only("sc_raw_enter")              # a raw_tp link is a BPF link (5.7+): pinnable
    return o.load()


def test_pin_into_a_missing_directory():
    """A pin path two missing directories deep (libbpf makes only the last
    one): refused with ENOENT, as MapError and LinkError."""
    path = _pin_path("no_such_dir") + "/sub/pin"
    with _raw_tp_object() as obj:
        e = raised(lambda: obj.maps["lost"].pin(path))
        assert_bpf_error(e, E.MapError, errno.ENOENT, "pin map 'lost'", path)
        link = obj.programs["sc_raw_enter"].attach()
        e = raised(lambda: link.pin(path))
        assert_bpf_error(e, E.LinkError, errno.ENOENT, "pin raw_tp link", path)
    assert not os.path.exists(os.path.dirname(os.path.dirname(path)))


def test_pin_where_no_bpffs_is_mounted():
    """/sys/fs/bpf without bpffs mounted: libbpf refuses the link pin (EINVAL,
    quoting its "not on BPF FS" message), the kernel the map pin.  Where bpffs
    is mounted (conftest mounts it), the test runs itself again in a private
    mount namespace with it unmounted."""
    if _bpffs():
        if os.environ.get(NO_BPFFS_ENV):
            pytest.fail("bpffs is still mounted inside the private mount namespace")
        res = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             'umount /sys/fs/bpf && exec "$0" -m pytest -q -p no:cacheprovider "$1"',
             sys.executable, f"{__file__}::test_pin_where_no_bpffs_is_mounted"],
            env=dict(os.environ, **{NO_BPFFS_ENV: "1"}), capture_output=True, text=True,
            timeout=300)
        assert res.returncode == 0 and "1 passed" in res.stdout, res.stdout + res.stderr
        return
    path = _pin_path("nofs")
    with _raw_tp_object() as obj:
        link = obj.programs["sc_raw_enter"].attach()
        e = raised(lambda: link.pin(path))
        assert_bpf_error(e, E.LinkError, errno.EINVAL, "not on BPF FS")
        e = raised(lambda: obj.maps["lost"].pin(path))
        assert isinstance(e, E.MapError) and e.errno in (errno.ENOENT, errno.EPERM), e
    assert not os.path.exists(path)


def test_pin_to_an_existing_path():
    """Pinning again: libbpf refuses a link that is already pinned (EBUSY, a
    LinkError), the kernel a map pin at the link's path (EEXIST, a MapError);
    the first pin stays."""
    if not _bpffs():
        pytest.skip("bpffs is not mounted at /sys/fs/bpf")
    path = _pin_path("twice")
    try:
        with _raw_tp_object() as obj:
            link = obj.programs["sc_raw_enter"].attach()
            link.pin(path)
            e = raised(lambda: link.pin(path))
            assert_bpf_error(e, E.LinkError, errno.EBUSY, path)
            e = raised(lambda: obj.maps["lost"].pin(path))
            assert_bpf_error(e, E.MapError, errno.EEXIST, "pin map 'lost'", path)
            assert os.path.exists(path)
    finally:
        if os.path.exists(path):
            os.unlink(path)


# ---- test runs and loads ---------------------------------------------------------

def test_test_run_refused_is_a_test_run_error():
    """The kernel refuses a raw_tp test run with more than 12 arguments
    (EINVAL) and any tracepoint-program test run given a context (ENOTSUPP,
    named although Python's errno module does not know it); without a
    context, the tracepoint refusal is NotSupportedError, as it was."""
    o = pytracers.open(BENCH)
    o.only("fill_8")
    with o.load() as obj:
        fill = obj.programs["fill_8"]
        assert fill.kind == "raw_tp"
        e = raised(lambda: fill.test_run([0] * 13))
        assert_bpf_error(e, E.TestRunError, errno.EINVAL, "test run of 'fill_8'")
        assert fill.test_run([1, 0]).retval == 1         # the program itself is fine
    with pytracers.open(EXEC).load() as obj:
        enter = obj.programs["exec_enter"]
        e = raised(lambda: enter.test_run(b"\0" * 8))
        assert_bpf_error(e, E.TestRunError, E.ENOTSUPP, "operation not supported")
        e = raised(lambda: enter.test_run())
        assert isinstance(e, E.NotSupportedError) and e.errno == E.ENOTSUPP


def test_a_failed_load_is_still_a_load_error():
    """A map the kernel refuses to create (2**31 hash buckets overflow its
    u32 size check) fails the load: a LoadError, as before."""
    o = pytracers.open(EXEC)
    o.maps["pending"].max_entries = 2 ** 31
    e = raised(o.load)
    assert type(e) is E.LoadError, repr(e)
    assert isinstance(e, E.BpfOperationError) and isinstance(e, OSError)
    assert e.errno in (errno.E2BIG, errno.ENOMEM, errno.EINVAL), e
    assert "load " in str(e) and f"[{E.errno_name(e.errno)}]" in str(e)
    assert raised(lambda: o.programs["exec_enter"].autoload).__class__ is E.ClosedError


@pytest.mark.skipif(bool(VM_KERNEL), reason="starts an interpreter (10-20 s under qemu TCG); "
                                            "the rule does not depend on the kernel")
def test_an_unprivileged_id_walk_is_refused_not_empty():
    """Without CAP_SYS_ADMIN the kernel refuses to walk BPF ids: introspect
    raises PermissionDeniedError instead of returning an empty set (which a
    leak check would read as "nothing leaked")."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    code = ("from pytracers import introspect, errors\n"
            "try:\n    print(sorted(introspect.prog_ids()))\n"
            "except errors.PermissionDeniedError as e:\n    print('refused', e.errno)\n")
    r = subprocess.run([setpriv, "--securebits=+noroot,+noroot_locked", "--bounding-set=-all",
                        "--inh-caps=-all", sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() in (["refused", str(errno.EPERM)], ["refused", str(errno.EACCES)]), \
        r.stdout


# ---- the classes themselves ------------------------------------------------------

@pytest.mark.kernel_independent
def test_the_tree():
    """One base for failed bpf() operations; LoadError keeps AttachError."""
    for cls in (E.LoadError, E.MapError, E.LinkError, E.TestRunError):
        assert issubclass(cls, E.BpfOperationError)
    assert issubclass(E.BpfOperationError, E.PytracersError)
    assert issubclass(E.BpfOperationError, OSError)
    assert issubclass(E.AttachError, E.LoadError)
    for cls in (E.MapError, E.LinkError, E.TestRunError):
        assert not issubclass(cls, E.LoadError)
    assert issubclass(E.KeyNotFoundError, KeyError)
    for name in E.__all__:
        obj = getattr(E, name)
        if isinstance(obj, type):
            assert issubclass(obj, E.PytracersError), name


@pytest.mark.kernel_independent
def test_errors_survive_pickling():
    """Errors cross process boundaries (multiprocessing, pytest-xdist) intact."""
    cases = [E.MapError("update map 'counts'", errno.E2BIG, "libbpf: full"),
             E.LinkError("pin link", errno.EEXIST), E.TestRunError("test run", E.ENOTSUPP),
             E.LoadError("load x", errno.ENOMEM), E.KeyNotFoundError(7, "map 'counts'")]
    for exc in cases:
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)
        assert getattr(back, "errno", None) == getattr(exc, "errno", None)


# ---- named, not numbered ---------------------------------------------------------

_ERRNO_NAMES = {"err", "errno", "error", "e", "rc", "ret", "res", "code", "errnum"}


def _errno_like(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    if isinstance(node, ast.Name):
        return node.id in _ERRNO_NAMES
    return isinstance(node, ast.Attribute) and node.attr == "errno"


def _type_like(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return node.id in ("type_", "map_type", "mtype")
    return isinstance(node, ast.Attribute) and node.attr in ("type", "map_type")


def _numbers(node: ast.AST) -> List[int]:
    """Nonzero int literals in ``node`` (or in the tuple/list/set it is)."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return _numbers(node.operand)
    if isinstance(node, ast.Constant) and type(node.value) is int and node.value:
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [n for elt in node.elts for n in _numbers(elt)]
    return []


def bare_numbers(path: pathlib.Path) -> List[Tuple[int, str]]:
    """(line, what) for every errno or map type written as a number in a
    module, and every definition of ENOTSUPP."""
    bad: List[Tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Compare) and all(
                isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
            sides = [node.left, *node.comparators]
            nums = [n for s in sides for n in _numbers(s)]
            if nums and any(_errno_like(s) for s in sides):
                bad.append((node.lineno, f"errno compared with {nums}"))
            elif nums and any(_type_like(s) for s in sides):
                bad.append((node.lineno, f"map type compared with {nums}"))
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", "")
            if name.endswith(("Error", "_error")):
                nums = [n for a in node.args for n in _numbers(a)] + [
                    n for k in node.keywords if k.arg in ("err", "errno")
                    for n in _numbers(k.value)]
                if nums:
                    bad.append((node.lineno, f"{name}() given errno {nums}"))
        elif isinstance(node, ast.Constant) and type(node.value) is int and node.value == E.ENOTSUPP:
            bad.append((node.lineno, f"{E.ENOTSUPP} (ENOTSUPP) as a number"))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name) and t.id.strip("_") == "ENOTSUPP":
                    bad.append((node.lineno, f"{t.id} defined"))
    return bad


@pytest.mark.kernel_independent
def test_no_bare_errno_or_map_type_numbers():
    """Every module under pytracers/ names errnos (errno.EINVAL, ENOTSUPP)
    and map types (MapType.ARRAY); ENOTSUPP is defined once, in errors.py."""
    found = {}
    for path in sorted(PKG.rglob("*.py")):
        if path.name == "_libbpf_ffi.py":          # generated by cffi
            continue
        bad = bare_numbers(path)
        if path == PKG / "errors.py":               # the one definition, on one line
            assert len({line for line, _ in bad}) == 1, bad
            assert sorted(w for _, w in bad) == ["524 (ENOTSUPP) as a number", "ENOTSUPP defined"]
            continue
        if bad:
            found[str(path.relative_to(PKG))] = bad
    assert not found, found


@pytest.mark.kernel_independent
def test_the_scan_sees_what_it_forbids(tmp_path):
    """The rule above can fail: each forbidden spelling is reported."""
    src = tmp_path / "bad.py"
    src.write_text("ENOTSUPP = 524\n"
                   "if err in (1, 13):\n    pass\n"
                   "if -rc == 22:\n    pass\n"
                   "if e.errno != 95:\n    pass\n"
                   "if self.type == 27:\n    pass\n"
                   "raise LoadError('x', 22)\n"
                   "raise NotSupportedError('x', 'y', errno=524)\n"
                   "if rc < 0 or err == errno.EINVAL or 0 < err < 4096:\n    pass\n")
    lines = sorted({line for line, _ in bare_numbers(src)})
    assert lines == [1, 2, 4, 6, 8, 10, 11], bare_numbers(src)


@pytest.mark.kernel_independent
def test_map_types_are_the_kernels():
    """MapType is enum bpf_map_type; MAP_TYPES (the old name table) follows it."""
    assert (MapType.HASH, MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.RINGBUF) == (1, 2, 6, 27)
    assert MAP_TYPES[27] == "ringbuf" and MAP_TYPES[6] == "percpu_array"
    assert len(MAP_TYPES) == len(MapType) == 32
