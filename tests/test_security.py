"""Security rules for a root process loading BPF code.

- As root, an object file, or a directory on its path (as given or after
  symlinks), that someone other than root can modify is refused unless the
  caller passes allow_insecure=True; sticky directories (/tmp) are fine.
- The file is checked through the descriptor it is read from.
- Pins (links and maps) are created 0600 whatever the umask.
- Nothing in pytracers runs a shell.
- Without root (no CAP_BPF) a load fails with PermissionDeniedError naming
  the capability, and the ownership rule does not apply.
"""
from __future__ import annotations

import ast
import os
import shutil
import stat
import tempfile
from typing import Any

import pytest

import pytracers
from pytracers.errors import BadArgumentError, InsecureFileError, NotSupportedError

EXEC = pytracers.object_path("exec")
PKG = os.path.dirname(pytracers.__file__)

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the ownership rule applies to root only")


@pytest.fixture
def tree(tmp_path: Any) -> str:
    """tmp/a/b/x.bpf.o, every level root-owned 0755 / 0644."""
    base = str(tmp_path)
    os.chmod(base, 0o755)
    d = os.path.join(base, "a", "b")
    os.makedirs(d)
    for p in (os.path.join(base, "a"), d):
        os.chmod(p, 0o755)
    f = os.path.join(d, "x.bpf.o")
    shutil.copy(EXEC, f)
    os.chmod(f, 0o644)
    return f


def _opens(path: str, **kw: Any) -> None:
    pytracers.open(path, **kw).close()


@pytest.mark.kernel_independent
@root_only
def test_safe_file_opens(tree: str) -> None:
    _opens(tree)


@pytest.mark.kernel_independent
@root_only
@pytest.mark.parametrize("mode,who", [(0o664, "group"), (0o646, "others"), (0o666, "group")])
def test_writable_file_refused(tree: str, mode: int, who: str) -> None:
    os.chmod(tree, mode)
    with pytest.raises(InsecureFileError, match=f"the file is writable by {who}") as ei:
        _opens(tree)
    assert "allow_insecure=True" in str(ei.value)
    _opens(tree, allow_insecure=True)


@pytest.mark.kernel_independent
@root_only
def test_file_of_other_user_refused(tree: str) -> None:
    os.chown(tree, 1000, 1000)
    with pytest.raises(InsecureFileError, match="the file is owned by uid 1000"):
        _opens(tree)
    _opens(tree, allow_insecure=True)


@pytest.mark.kernel_independent
@root_only
def test_writable_directory_on_path_refused(tree: str) -> None:
    a = os.path.dirname(os.path.dirname(tree))
    os.chmod(a, 0o777)
    with pytest.raises(InsecureFileError, match=f"directory {a} is writable by group"):
        _opens(tree)
    os.chmod(a, 0o1777)            # sticky: others cannot replace our entries
    _opens(tree)


@pytest.mark.kernel_independent
@root_only
def test_directory_of_other_user_refused(tree: str) -> None:
    b = os.path.dirname(tree)
    os.chown(b, 1000, 1000)
    with pytest.raises(InsecureFileError, match=f"directory {b} is owned by uid 1000"):
        _opens(tree)


@pytest.mark.kernel_independent
@root_only
def test_symlink_from_insecure_directory_refused(tree: str, tmp_path: Any) -> None:
    """A safe file reached through a symlink that others could re-point."""
    pub = os.path.join(str(tmp_path), "pub")
    os.mkdir(pub)
    os.chmod(pub, 0o777)
    link = os.path.join(pub, "x.bpf.o")
    os.symlink(tree, link)
    with pytest.raises(InsecureFileError, match=f"directory {pub} is writable"):
        _opens(link)


@pytest.mark.kernel_independent
@root_only
def test_symlink_to_insecure_file_refused(tree: str, tmp_path: Any) -> None:
    pub = os.path.join(str(tmp_path), "pub")
    os.mkdir(pub)
    os.chmod(pub, 0o777)
    target = os.path.join(pub, "evil.bpf.o")
    shutil.copy(EXEC, target)
    os.chmod(target, 0o644)
    link = os.path.join(os.path.dirname(tree), "link.bpf.o")
    os.symlink(target, link)
    with pytest.raises(InsecureFileError, match=f"directory {pub} is writable"):
        _opens(link)


@pytest.mark.kernel_independent
@root_only
def test_checks_are_made_on_the_file_that_is_read(tree: str, monkeypatch: Any) -> None:
    """Swapping the file between the check and the read cannot work: the
    check runs on the descriptor that is then read.  Simulated by swapping
    the path right after the file was opened."""
    from pytracers.elf import inspect as elfcheck
    evil = tree + ".evil"
    with open(evil, "wb") as f:
        f.write(b"not what was checked")
    real_open = os.open
    swapped = []

    def open_then_swap(path: Any, flags: int, *a: Any) -> int:
        fd = real_open(path, flags, *a)
        if path == tree and not swapped:
            os.rename(evil, tree)      # the path now names another file
            swapped.append(True)
        return fd

    monkeypatch.setattr(elfcheck.os, "open", open_then_swap)
    data = elfcheck.read_object_bytes(tree)
    assert swapped and data == open(EXEC, "rb").read()


def test_pins_are_0600_whatever_the_umask() -> None:
    if not os.path.ismount("/sys/fs/bpf"):
        pytest.skip("bpffs is not mounted at /sys/fs/bpf")
    paths = [f"/sys/fs/bpf/pytracers_test_{os.getpid()}_{n}" for n in ("link", "map", "tp")]
    old = os.umask(0)
    try:
        o = pytracers.open(pytracers.object_path("syscalls"))
        o.only("sc_raw_enter")
        with o.load() as obj:                       # a raw_tp link is a BPF link (5.7+)
            obj.programs["sc_raw_enter"].attach().pin(paths[0])
            obj.maps["lost"].pin(paths[1])
            for p in paths[:2]:
                assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p
                assert os.stat(p).st_uid == os.geteuid()
        with pytracers.open(EXEC).load() as obj:
            link = obj.programs["exec_enter"].attach()
            try:
                link.pin(paths[2])
                assert stat.S_IMODE(os.stat(paths[2]).st_mode) == 0o600
            except NotSupportedError as e:          # before 5.15 a tp link is a perf event
                assert "only BPF links can be pinned" in str(e)
                assert not os.path.exists(paths[2])
    finally:
        os.umask(old)
        for p in paths:
            if os.path.exists(p):
                os.unlink(p)


@pytest.mark.parametrize("path", ["/tmp/x", "/sys/fs/bpf/../../tmp/x", "sys/fs/bpf/x"])
def test_pin_outside_bpffs_refused(path: str) -> None:
    with pytracers.open(EXEC).load() as obj:
        link = obj.programs["exec_enter"].attach()
        with pytest.raises(BadArgumentError, match="pin paths must lie under /sys/fs/bpf/"):
            link.pin(path)
        with pytest.raises(BadArgumentError, match="pin paths must lie under /sys/fs/bpf/"):
            obj.maps["lost"].pin(path)


def _shell_uses(tree: ast.AST) -> list:
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
        owner = getattr(f.value, "id", "") if isinstance(f, ast.Attribute) else ""
        if owner == "os" and name in ("system", "popen") or name.startswith("spawnl") \
                or (owner == "os" and name.startswith(("exec", "spawn")) and name.endswith("p")):
            bad.append((node.lineno, f"os.{name}"))
        for kw in node.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant)
                                          and kw.value.value is False):
                bad.append((node.lineno, "shell=..."))
        if owner == "subprocess" and node.args and isinstance(node.args[0],
                                                              (ast.Constant, ast.JoinedStr)):
            bad.append((node.lineno, "subprocess with a command string"))
    return bad


@pytest.mark.kernel_independent   # a check of the source code
def test_nothing_runs_a_shell() -> None:
    found = []
    for root, _, files in os.walk(PKG):
        for n in files:
            if n.endswith(".py"):
                p = os.path.join(root, n)
                with open(p) as f:
                    tree = ast.parse(f.read(), p)
                found += [(os.path.relpath(p, PKG), *b) for b in _shell_uses(tree)]
    assert not found, f"shell use in pytracers: {found}"
    # the checker itself finds what it looks for
    sample = ast.parse("import os, subprocess\nos.system('x')\nsubprocess.run('ls', shell=True)\n")
    assert len(_shell_uses(sample)) == 3


def _as_nobody(fn: Any) -> str:
    """Run ``fn()`` in a forked child that became uid/gid 65534 (nobody): a
    non-root uid keeps no capabilities.  Returns what ``fn`` returned, or
    "ExceptionName|message"."""
    if os.geteuid() != 0:
        pytest.skip("needs root to fork a child that drops its privileges")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        try:
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                assert _caps() == 0, "capabilities left after setuid"
                res = str(fn())
            except BaseException as e:  # noqa: BLE001
                res = f"{type(e).__name__}|{e}"
            os.write(w, res.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), f"child died: {status}"
    return out


def _caps() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return -1


def test_without_privileges_load_names_the_capability() -> None:
    from pytracers.errors import PermissionDeniedError

    def load() -> str:
        o = pytracers.open(EXEC)
        try:
            o.load().close()
            return "loaded"
        except PermissionDeniedError as e:
            return f"PermissionDeniedError {e.capability} | {e}"
    line = _as_nobody(load)
    print(line)
    assert line.startswith("PermissionDeniedError CAP_BPF (or CAP_SYS_ADMIN)"), line
    assert "permission denied; needs CAP_BPF" in line


def test_ownership_rule_is_for_root_only() -> None:
    d = tempfile.mkdtemp(prefix="pytracers-sec-")   # pytest's tmp_path is 0700
    try:
        os.chmod(d, 0o755)
        f = os.path.join(d, "x.bpf.o")
        shutil.copy(EXEC, f)
        os.chmod(f, 0o666)

        def opens() -> str:
            pytracers.open(f).close()
            return "opened"
        assert _as_nobody(opens) == "opened"
    finally:
        shutil.rmtree(d)
