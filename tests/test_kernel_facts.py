"""Kernel facts (pytracers.kernel): each read in one place, parsed the same way
for every caller.

Version strings, kallsyms, the debugfs deny lists and securityfs' lockdown
file are parsed from text written here, so the outcomes cannot depend on the
running kernel; the last tests check the old import paths and that the
facts do not import the tracers.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pytracers import features, pytest_plugin
from pytracers.errors import BadArgumentError
from pytracers.kernel import host, symbols

pytestmark = pytest.mark.kernel_independent

KALLSYMS = """\
ffffffff81000000 T _stext
ffffffff81001000 t do_one_initcall
ffffffff81002000 W arch_cpu_idle
ffffffff81003000 D jiffies
ffffffff81004000 T vfs_read
ffffffff81005000 T vfs_write
ffffffff81006000 t vfs_write
0000000000000000 t vfs_hidden
ffffffffc0001000 t xfs_vn_read\t[xfs]
"""


@pytest.mark.parametrize("text,version", [
    ("5.10.0-30-amd64", (5, 10, 0)),
    ("6.12.9+deb13-amd64", (6, 12, 9)),
    ("7.2.0-rc1", (7, 2, 0)),
    ("6.18.44-fc-v1272", (6, 18, 44)),
    ("5.18", (5, 18)),
])
def test_versions_parse_to_their_leading_numbers(text, version):
    """A release string's distribution suffix (-30-amd64, +deb13, -rc1) is not
    part of the version; a minimum kernel ("5.18") parses the same way."""
    assert host.parse_version(text) == version


def test_a_string_without_a_version_is_a_bad_argument():
    """A marker's min_kernel="latest" is a caller's mistake, reported as such."""
    with pytest.raises(BadArgumentError, match="not a kernel version: 'latest'"):
        host.parse_version("latest")


def test_every_caller_compares_the_running_version_alike(monkeypatch):
    """features, the pytest plugin and kernel_older_than read one parse of the
    release: 5.10.0-30-amd64 is older than 5.18 and not older than 5.10."""
    monkeypatch.setattr(host, "kernel_release", lambda: "5.10.0-30-amd64")
    assert features.kernel_version() == pytest_plugin.kernel_version() == (5, 10, 0)
    assert features.kernel_version() < (5, 18)
    assert host.kernel_older_than("5.18") and not host.kernel_older_than("5.10")
    monkeypatch.setattr(host, "kernel_release", lambda: "custom")
    assert host.kernel_version() == (0, 0)


def test_missing_bpf_capability_is_named(monkeypatch):
    """CAP_SYS_ADMIN covers everything; otherwise CAP_BPF, then (for tracing)
    CAP_PERFMON is the one named."""
    def caps(*bits):
        monkeypatch.setattr(host, "effective_caps", lambda: sum(1 << b for b in bits))
    caps(host.CAP_SYS_ADMIN)
    assert host.missing_bpf_caps() is None
    caps()
    assert host.missing_bpf_caps() == "CAP_BPF (or CAP_SYS_ADMIN)"
    caps(host.CAP_BPF)
    assert host.missing_bpf_caps() == "CAP_PERFMON (or CAP_SYS_ADMIN)"
    assert host.missing_bpf_caps(tracing=False) is None
    caps(host.CAP_BPF, host.CAP_PERFMON)
    assert host.missing_bpf_caps() is None


def test_lockdown_mode_is_the_bracketed_word(monkeypatch, tmp_path):
    """securityfs shows "none [integrity] confidentiality": the mode is the
    bracketed one; without the file there is no mode (and nothing is mounted
    unless asked)."""
    monkeypatch.setattr(host, "SECURITYFS", str(tmp_path))
    assert host.lockdown_mode() is None
    (tmp_path / "lockdown").write_text("none [integrity] confidentiality\n")
    assert host.lockdown_mode() == "integrity"


@pytest.fixture
def fake_lists(monkeypatch, tmp_path):
    """symbols reading the files written here, with empty caches before and after."""
    paths = {}
    for attr, name in (("KALLSYMS", "kallsyms"), ("KPROBE_BLACKLIST", "blacklist"),
                       ("ERROR_INJECTION_LIST", "error_injection")):
        paths[name] = tmp_path / name
        monkeypatch.setattr(symbols, attr, str(paths[name]))
    symbols.clear_cache()
    yield paths
    symbols.clear_cache()


def test_kallsyms_functions_are_the_text_symbols(fake_lists):
    """Types t, T, w, W are functions (a module's too); data (D) is not.  Read
    once: a change to the file is seen only after clear_cache()."""
    fake_lists["kallsyms"].write_text(KALLSYMS)
    names = symbols.kallsyms_functions()
    assert names == {"_stext", "do_one_initcall", "arch_cpu_idle", "vfs_read", "vfs_write",
                     "vfs_hidden", "xfs_vn_read"}
    fake_lists["kallsyms"].write_text("ffffffff81000000 T other\n")
    assert symbols.kallsyms_functions() is names
    features.clear_cache()
    assert symbols.kallsyms_functions() == {"other"}


def test_kallsyms_matching_maps_addresses_to_names(fake_lists):
    """Every address of a matching function (two for a duplicated static
    name); addresses kptr_restrict hides (zero) are left out."""
    fake_lists["kallsyms"].write_text(KALLSYMS)
    assert symbols.kallsyms_matching("vfs_*") == {
        0xffffffff81004000: "vfs_read", 0xffffffff81005000: "vfs_write",
        0xffffffff81006000: "vfs_write"}


def test_function_exists_answers_from_btf_then_kallsyms(fake_lists, monkeypatch):
    """In kallsyms (a text symbol): True; absent from a readable kallsyms:
    False; kallsyms unreadable and no BTF names it: None (cannot tell)."""
    monkeypatch.setattr(symbols, "_in_vmlinux_btf", lambda name: name == "in_btf_only")
    monkeypatch.setattr(symbols, "signature", lambda name: None)
    assert symbols.function_exists("vfs_read") is None            # no kallsyms file yet
    fake_lists["kallsyms"].write_text(KALLSYMS)
    assert symbols.function_exists("in_btf_only") is True
    assert symbols.function_exists("vfs_read") is True
    assert symbols.function_exists("xfs_vn_read") is True          # a module's function
    assert symbols.function_exists("jiffies") is False             # data, not a function
    assert symbols.function_exists("no_such_function") is False
    assert symbols.in_btf("in_btf_only") and not symbols.in_btf("vfs_read")


def test_deny_lists_are_read_by_function_name(fake_lists):
    """The kprobe blacklist's last column (an address range first) and the
    error-injection list's first column, "+offset" dropped; None when the
    file cannot be read, never an empty set."""
    assert symbols.kprobe_blacklist() is None and symbols.error_injection_list() is None
    symbols.clear_cache()
    fake_lists["blacklist"].write_text("0xffffffff81000000-0xffffffff81000010\tdo_int3\n"
                                       "0xffffffff81000020-0xffffffff81000030\tnmi+0x10\n")
    fake_lists["error_injection"].write_text("should_failslab\tERRNO\n"
                                             "open_ctree+0x0/0x10\tERRNO\n")
    assert symbols.kprobe_blacklist() == {"do_int3", "nmi"}
    assert symbols.error_injection_list() == {"should_failslab", "open_ctree"}


def test_old_module_paths_are_the_moved_modules():
    """pytracers.tracefs and pytracers.introspect are the kernel/ modules
    themselves: what is set through the old name is what the library reads."""
    import pytracers.introspect
    import pytracers.kernel.introspect
    import pytracers.kernel.tracefs
    import pytracers.tracefs
    assert pytracers.tracefs is pytracers.kernel.tracefs
    assert pytracers.introspect is pytracers.kernel.introspect
    from pytracers.tracers.function import Signature, signature
    assert (Signature, signature) == (symbols.Signature, symbols.signature)


def test_kernel_facts_do_not_import_the_tracers():
    """The prober and the kernel facts sit below the tracers: importing them
    and asking whether functions have BTF (the prober's trampoline target)
    loads no tracer module."""
    code = ("import sys, pytracers.features as f, pytracers.kernel.symbols as s\n"
            "f.probe_function('fentry'); s.function_exists('vfs_read')\n"
            "print(sorted(m for m in sys.modules if m.startswith('pytracers.tracers')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.strip() == "[]", out.stdout
