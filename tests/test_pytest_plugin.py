"""The pytest plugin (pytracers.pytest_plugin, entry point pytest11).

pytester runs the documented example (examples/pytest/test_exec_hook.py) and
small files exercising the skip/fail rule in a fresh pytest subprocess, where
the plugin is loaded through its entry point; the last tests use the
fixtures and helpers directly in this suite.
"""
from __future__ import annotations

import os
import struct
import subprocess

import pytest

import pytracers
from pytracers import pytest_plugin as plugin
from pytracers.errors import NotSupportedError

pytest_plugins = ["pytester"]

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "pytest",
                       "test_exec_hook.py")


def _pid_of(rec: bytes) -> int:
    return struct.unpack_from("<QI", rec)[1]


# "some_feature"/"other_feature" are made-up names the prober does not know, so
# these exercise the rule on the exceptions the tests raise, alike on every kernel.
RULE = '''
import pytest
from pytracers.errors import NotSupportedError

@pytest.mark.bpf_requires("some_feature", min_kernel="5.4")
def test_known_lack_skips():
    raise NotSupportedError("some_feature", "program load refused with EPERM and no "
                            "verifier log (kernel lockdown is 'integrity')")

@pytest.mark.bpf_requires("some_feature", min_kernel="5.5")
def test_unexplained_lack_fails():
    raise NotSupportedError("some_feature", "EINVAL with no explanation")

@pytest.mark.bpf_requires("some_feature", min_kernel="99.1")
def test_old_kernel_skips_before_running():
    raise AssertionError("must not run")

@pytest.mark.bpf_requires("some_feature", min_kernel="5.5")
def test_other_feature_is_not_covered():
    raise NotSupportedError("kprobe_multi", "CONFIG_FPROBE is off")

def test_unmarked_not_supported_fails():
    raise NotSupportedError("some_feature", "CONFIG_X is off")

@pytest.mark.bpf_requires("other_feature", min_kernel="5.4")
def test_expected_feature_fails_even_for_a_known_lack():   # --bpf-expect=other_feature
    raise NotSupportedError("other_feature", "CONFIG_OTHER is off")

@pytest.mark.bpf_requires("BPF_PROG_TEST_RUN")
def test_tp_test_run(bpf_object, bpf_test_run):
    # a real refusal: the kernel has no BPF_PROG_TEST_RUN for tracepoint programs
    obj = bpf_object("exec", attach=False)
    bpf_test_run(obj.programs["exec_enter"])
'''


# Decided by the feature prober before the body runs.
PROBED = '''
import pytest

@pytest.mark.bpf_requires("kprobe")
def test_kprobe_as_the_prober_says():
    pass
'''


def _prober_outcome(kind: str) -> str:
    """What the marker must make of a test needing ``kind`` here."""
    from pytracers import features
    f = features.probe_one(kind)
    if f.supported or not f.conclusive:
        return "passed"
    err = NotSupportedError(kind, f.reason, min_kernel=f.min_kernel)
    return "skipped" if plugin.known_lack(err) else "failed"


@pytest.mark.kind("tp")
def test_example_and_marker_rule_in_a_fresh_pytest(pytester):
    """One pytest subprocess (the plugin loads through its entry point) runs
    the documented example, a file exercising every branch of the rule, and
    one the feature prober decides."""
    with open(EXAMPLE) as f:
        pytester.makepyfile(test_exec_hook=f.read(), test_rule=RULE, test_probed=PROBED)
    res = pytester.runpytest_subprocess("-rsf", "-p", "no:cacheprovider",
                                        "--bpf-expect=other_feature,nothing_else")
    # example: 3 passed, 1 skipped; rule: 2 skipped + test_tp_test_run skipped, 4 failed
    want = {"passed": 3, "skipped": 4, "failed": 4}
    kprobe = _prober_outcome("kprobe")
    want[kprobe] += 1
    res.assert_outcomes(**want)
    if kprobe == "skipped":
        res.stdout.fnmatch_lines(["SKIPPED*lacks kprobe: *"])
    res.stdout.fnmatch_lines_random([
        "*lacks kprobe_multi (first available in Linux 99.0)*",
        "SKIPPED*lacks some_feature: program load refused with EPERM*",
        "SKIPPED*lacks some_feature (first available in Linux 99.1)*",
        "SKIPPED*lacks BPF_PROG_TEST_RUN*",
        "*some_feature is not supported on kernel * for an unexpected reason (Linux 5.5 or later "
        "should have it)*",
        "*other_feature is expected to work on this machine (--bpf-expect)*",
        "FAILED*test_unexplained_lack_fails*",
        "FAILED*test_other_feature_is_not_covered*",
        "FAILED*test_unmarked_not_supported_fails*",
        "FAILED*test_expected_feature_fails_even_for_a_known_lack*",
    ])
    for name in ("test_exec_is_traced", "test_configured_before_load",
                 "test_producer_under_test_run"):
        assert f"FAILED test_exec_hook.py::{name}" not in res.stdout.str()


# ---- direct use, in this suite ------------------------------------------------

@pytest.mark.kind("tp")
@pytest.mark.bpf_requires("tp")
def test_fixtures_directly(bpf_object, bpf_events):
    obj = bpf_object(pytracers.object_path("exec"), attach={"exec_enter": None,
                                                            "exec_exit": None})
    events = bpf_events(obj)
    child = subprocess.Popen(["/bin/true", "direct"])
    child.wait()
    rec = events.wait_for(lambda r: _pid_of(r) == child.pid)
    assert rec[320:] == b"/bin/true\0direct\0"          # the packed argv ends the record
    assert rec in events.records


def test_wait_for_fails_with_a_count_of_what_arrived(bpf_object, bpf_events):
    obj = bpf_object("exec", attach=False)
    events = bpf_events(obj)
    with pytest.raises(pytest.fail.Exception, match=r"0 of 1 expected event\(s\) matching "
                                                    r"pid=-1 arrived within 0.1s"):
        events.wait_for(timeout=0.1, pid=-1)


def test_requires_context_manager_and_helpers():
    with pytest.raises(pytest.skip.Exception, match="lacks fentry: .*lockdown"):
        with plugin.requires("fentry", min_kernel="5.5"):
            raise NotSupportedError("fentry", "refused (kernel lockdown is 'integrity')")
    with pytest.raises(pytest.fail.Exception, match="unexpected reason"):
        with plugin.requires("fentry", min_kernel="5.5"):
            raise NotSupportedError("fentry", "EINVAL")
    with pytest.raises(pytest.fail.Exception, match="expected to work"):
        with plugin.requires("kprobe", expect=["kprobe"]):
            raise NotSupportedError("kprobe", "CONFIG_KPROBES is off")
    with pytest.raises(pytest.skip.Exception, match="first available in Linux 99.0"):
        with plugin.requires("kprobe", min_kernel="99.0"):
            raise AssertionError("not reached")
    assert plugin.kernel_version() >= (3,)


def test_object_factory_closes_everything():
    factory = plugin.ObjectFactory()
    obj = factory("exec")
    links = list(obj._children.values())
    assert len(links) == 2 and all(not link.closed for link in links)
    factory.close()
    assert obj.closed and all(link.closed for link in links)
    factory.close()   # safe twice
