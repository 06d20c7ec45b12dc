"""pytest plugin for testing your own BPF objects with pytracers.

Installed with pytracers (entry point ``pytest11``), so it is active in any
pytest run where pytracers is importable.  It adds:

``@pytest.mark.bpf_requires(*features, min_kernel=None)``
    The test needs these kernel features (probe kinds such as ``"fentry"``,
    ``"kprobe"``, ``"tp_btf"``, or any :class:`~pytracers.errors.NotSupportedError`
    feature name such as ``"BPF_PROG_TEST_RUN"``).  The rule is the one
    cilium/ebpf's ``SkipIfNotSupported`` follows:

    * on a kernel older than ``min_kernel`` (default: the first upstream
      kernel with the feature, where pytracers knows it) the test is
      **skipped** before it runs, naming what is missing;
    * features the prober knows (``pytracers.features.FEATURES``: the probe
      kinds, ``ringbuf``, ``btf``, ``cookies``...) are probed before the test
      runs; a conclusive "no" is decided by the next rule without running it;
    * when the test raises ``NotSupportedError`` for a listed feature, it is
      **skipped** only if the kernel lacks the feature for a known reason
      (a config option off, lockdown or a security module refusing it, no
      trampoline for the architecture) and **fails** otherwise -- a kernel
      that should have the feature must not hide a regression behind a skip;
    * ``--bpf-expect=fentry,kprobe`` (or ``all``) says "this machine must
      have these": any ``NotSupportedError`` for them fails the test.

    A marker without features covers every ``NotSupportedError``.

Fixtures (all close what they opened at teardown, links first):

``bpf_object(path_or_name, *, config=None, only=None, sizes=None, attach=True)``
    Open, configure, load and attach an object; returns the loaded
    :class:`~pytracers.object.Object`.  ``path_or_name`` is a path to a
    ``.bpf.o`` or the short name of an object shipped with pytracers
    (``"exec"``).  ``attach`` is True (every loaded program at its section's
    target), False, a list of program names, or ``{program: target}``.

``bpf_events(obj, map_name="events", *, event=None)``
    An :class:`EventCollector` on the object's ring buffer: ``drain()``,
    ``collect(timeout)``, ``wait_for(predicate, timeout=..., **fields)``.
    ``event="struct_name"`` decodes records through the object's BTF.

``bpf_test_run(program, ctx=None, *, repeat=1, retval=None)``
    Run a loaded program with BPF_PROG_TEST_RUN
    (:meth:`~pytracers.program.Program.test_run`) and check its return value.

Example (this is what ``tests/test_pytest_plugin.py`` runs)::

    import struct, subprocess, pytest

    @pytest.mark.bpf_requires("tp")
    def test_exec_is_traced(bpf_object, bpf_events):
        obj = bpf_object("exec")                 # loaded, both programs attached
        events = bpf_events(obj)                 # records as bytes (event=... decodes)
        child = subprocess.Popen(["/bin/true"])
        child.wait()
        rec = events.wait_for(lambda r: struct.unpack_from("<QI", r)[1] == child.pid)
        assert rec[56:56 + 256].split(b"\\0")[0] == b"/bin/true"

The helpers are importable too: :func:`requires` (the marker's rule as a
context manager), :func:`run_program`, :class:`ObjectFactory`,
:class:`EventCollector`.
"""
from __future__ import annotations

import contextlib
import os
import re
import time
from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Mapping,
                    Optional, Sequence, Tuple, Union)

import pytest

from .errors import NotSupportedError
from .kernel.host import kernel_older_than, kernel_release, kernel_version

if TYPE_CHECKING:
    from .object import Object
    from .program import Program, TestRun
    from .ringbuf import RingBuffer

__all__ = ["requires", "run_program", "ObjectFactory", "EventCollector", "kernel_version",
           "known_lack", "MARKER"]

MARKER = "bpf_requires"
_EXPECT_ENV = "PYTRACERS_EXPECT"


# ---- the rule ---------------------------------------------------------------

def _min_kernel(feature: str, given: Optional[str]) -> Optional[str]:
    if given:
        return given
    from .features import MIN_KERNEL
    return MIN_KERNEL.get(feature)


_KNOWN_LACK = (
    "CONFIG_",                    # a config option is off (kprobes, fprobe, ...)
    "lockdown",                   # kernel lockdown refuses it
    "security module",            # an LSM refuses it
    "no BPF trampoline",          # trampolines missing for this arch/config
    "ENOTSUPP", "EOPNOTSUPP",     # the kernel says it cannot
    "not modifiable", "may not have its return value modified",   # fmod_ret targets
)


def known_lack(exc: NotSupportedError) -> Optional[str]:
    """The reason if ``exc`` shows a known, configuration-level lack (a
    config option off, lockdown, a security module, no trampoline), or None
    if the kernel gave no such explanation."""
    reason = exc.reason or ""
    if any(k in reason for k in _KNOWN_LACK):
        return reason
    return None


def _covers(features: Sequence[str], exc: NotSupportedError) -> bool:
    if not features or "*" in features:
        return True
    words = set(re.split(r"[\s/,:()]+", exc.feature))
    return any(f == exc.feature or f in words for f in features)


def _expected(config: Optional[pytest.Config]) -> List[str]:
    raw = None
    if config is not None:
        raw = config.getoption("bpf_expect", None)
    raw = raw or os.environ.get(_EXPECT_ENV, "")
    return [w.strip() for w in raw.split(",") if w.strip()]


def _label() -> str:
    return f"kernel {kernel_release()}"


def _too_old(feature: str, min_kernel: Optional[str]) -> Optional[str]:
    mk = _min_kernel(feature, min_kernel)
    if mk and kernel_older_than(mk):
        return f"{_label()} lacks {feature} (first available in Linux {mk})"
    return None


def _decide(features: Sequence[str], min_kernel: Optional[str], exc: NotSupportedError,
            expect: Sequence[str]) -> None:
    """Skip or fail for ``exc`` according to the rule in the module docstring."""
    feature = next((f for f in features if _covers([f], exc)), exc.feature)
    if "all" in expect or feature in expect or exc.feature in expect:
        pytest.fail(f"{feature} is expected to work on this machine (--bpf-expect) "
                    f"but: {exc}", pytrace=False)
    old = _too_old(feature, min_kernel or exc.min_kernel)
    if old:
        pytest.skip(old)
    why = known_lack(exc)
    if why is None:
        mk = _min_kernel(feature, min_kernel or exc.min_kernel)
        should = f" (Linux {mk} or later should have it)" if mk else ""
        pytest.fail(f"{feature} is not supported on {_label()} for an unexpected "
                    f"reason{should}: {exc}", pytrace=False)
    pytest.skip(f"{_label()} lacks {feature}: {why}")


@contextlib.contextmanager
def requires(*features: str, min_kernel: Optional[str] = None,
             expect: Sequence[str] = ()) -> Iterator[None]:
    """Run a block that needs ``features``: skip before running on a kernel
    older than ``min_kernel``; turn a ``NotSupportedError`` for one of them
    into a skip (known lack) or a failure (the kernel should have it)."""
    for f in features:
        old = _too_old(f, min_kernel)
        if old:
            pytest.skip(old)
    try:
        yield
    except NotSupportedError as e:
        if not _covers(features, e):
            raise
        exc = e
    else:
        return
    _decide(features, min_kernel, exc, list(expect) or _expected(None))


# ---- hooks --------------------------------------------------------------------

def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pytracers")
    group.addoption("--bpf-expect", dest="bpf_expect", default=None, metavar="FEATURES",
                    help="comma-separated BPF features this machine must support (or 'all'): "
                         "a NotSupportedError for them fails a @bpf_requires test instead of "
                         f"skipping it (also ${_EXPECT_ENV})")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*features, min_kernel=None): the test needs these BPF features; skipped on "
        "kernels that lack them, failed on kernels that should have them (pytracers)")


def _marker_args(item: pytest.Item) -> Optional[Tuple[List[str], Optional[str]]]:
    m = item.get_closest_marker(MARKER)
    if m is None:
        return None
    features = [str(a) for a in m.args]
    mk = m.kwargs.get("min_kernel")
    return features, (str(mk) if mk is not None else None)


def _probed_lack(feature: str) -> Optional[NotSupportedError]:
    """The feature prober's conclusive "no" for ``feature`` as an exception,
    or None (supported, inconclusive, or not a feature the prober knows)."""
    from . import features
    if feature not in features.FEATURES:
        return None
    f = features.probe_one(feature)
    if f.supported or not f.conclusive:
        return None
    return NotSupportedError(feature, f.reason, min_kernel=f.min_kernel, hint=f.fix)


def pytest_runtest_setup(item: pytest.Item) -> None:
    req = _marker_args(item)
    if req is None:
        return
    features, mk = req
    expect = _expected(item.config)
    for f in features:
        if "all" in expect or f in expect:
            continue
        old = _too_old(f, mk)
        if old:
            pytest.skip(old)
    # Ask the feature prober (pytracers.features) before running: a kind the
    # kernel conclusively lacks is decided here by the same rule.
    for f in features:
        lack = _probed_lack(f)
        if lack is not None:
            _decide(features, mk, lack, expect)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    req = _marker_args(item)
    if req is None:
        return (yield)
    features, mk = req
    try:
        return (yield)
    except NotSupportedError as e:
        if not _covers(features, e):
            raise
        exc = e
    # outside the except block, so the report is not "during handling of ..."
    _decide(features, mk, exc, _expected(item.config))
    raise exc  # not reached: _decide always skips or fails


# ---- objects ----------------------------------------------------------------

def _resolve_path(path_or_name: Union[str, "os.PathLike[str]"]) -> str:
    p = os.fspath(path_or_name)
    if os.sep not in p and not p.endswith(".o"):
        from ._shipped import object_path
        shipped = object_path(p)
        if os.path.exists(shipped):
            return shipped
    return p


class ObjectFactory:
    """Open, configure, load and attach objects; :meth:`close` closes them all."""

    def __init__(self) -> None:
        self.objects: List["Object"] = []

    def __call__(self, path_or_name: Union[str, "os.PathLike[str]"], *,
                 config: Optional[Mapping[str, Any]] = None,
                 only: Optional[Iterable[str]] = None,
                 sizes: Optional[Mapping[str, int]] = None,
                 targets: Optional[Mapping[str, str]] = None,
                 attach: Union[bool, Iterable[str], Mapping[str, Optional[str]]] = True,
                 allow_insecure: bool = False) -> "Object":
        """``config``: const volatile globals; ``only``: programs to load;
        ``sizes``: map max_entries; ``targets``: attach targets of BTF-based
        programs (set before load); ``attach``: see the module docstring."""
        from .object import open as open_object
        o = open_object(_resolve_path(path_or_name), allow_insecure=allow_insecure)
        try:
            if only is not None:
                o.only(*only)
            for k, v in (config or {}).items():
                o.config[k] = v
            for k, n in (sizes or {}).items():
                o.maps[k].max_entries = n
            for k, t in (targets or {}).items():
                o.programs[k].set_attach_target(t)
        except BaseException:
            o.close()
            raise
        obj = o.load()
        self.objects.append(obj)
        if attach is True:
            plan: Dict[str, Optional[str]] = {n: None for n in obj.programs}
        elif attach is False:
            plan = {}
        elif isinstance(attach, Mapping):
            plan = dict(attach)
        else:
            plan = {n: None for n in attach}
        for name, target in plan.items():
            obj.programs[name].attach(target)
        return obj

    def close(self) -> None:
        while self.objects:
            self.objects.pop().close()


class EventCollector:
    """Collect records from a ring buffer during a test.

    ``records`` holds every record seen so far, oldest first."""

    def __init__(self, ring: "RingBuffer") -> None:
        self.ring = ring
        self.records: List[Any] = []

    def drain(self) -> List[Any]:
        """Records available now (also appended to :attr:`records`)."""
        new: List[Any] = []
        self.ring.consume(new.append)
        self.records.extend(new)
        return new

    def collect(self, timeout: float = 0.5) -> List[Any]:
        """Every record that arrives within ``timeout`` seconds."""
        new: List[Any] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.ring.poll(left, new.append)
        self.ring.consume(new.append)
        self.records.extend(new)
        return new

    def wait_for(self, predicate: Optional[Callable[[Any], bool]] = None, *,
                 timeout: float = 10.0, count: int = 1, **fields: Any) -> Any:
        """The first record (``count`` > 1: the first ``count`` records)
        matching ``predicate`` and having the attribute values ``fields``,
        among the records already seen and those arriving within
        ``timeout``; fails the test if they do not arrive."""
        def match(r: Any) -> bool:
            if predicate is not None and not predicate(r):
                return False
            return all(getattr(r, k, None) == v for k, v in fields.items())

        found = [r for r in self.records if match(r)]
        deadline = time.monotonic() + timeout
        while len(found) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            new: List[Any] = []
            self.ring.poll(min(left, self.ring.latency), new.append)
            self.records.extend(new)
            found.extend(r for r in new if match(r))
        if len(found) < count:
            want = ", ".join(f"{k}={v!r}" for k, v in fields.items()) or "the predicate"
            pytest.fail(f"{len(found)} of {count} expected event(s) matching {want} arrived "
                        f"within {timeout}s ({len(self.records)} events seen in all)",
                        pytrace=False)
        return found[0] if count == 1 else found[:count]

    def close(self) -> None:
        self.ring.close()


def run_program(program: "Program", ctx: Union[bytes, Sequence[int], None] = None, *,
                repeat: int = 1, retval: Optional[int] = None, **kw: Any) -> "TestRun":
    """Run ``program`` with BPF_PROG_TEST_RUN; if ``retval`` is given, fail
    unless the program returned it."""
    res = program.test_run(ctx, repeat=repeat, **kw)
    if retval is not None and res.retval != retval:
        pytest.fail(f"{program.name} returned {res.retval}, expected {retval}", pytrace=False)
    return res


# ---- fixtures -------------------------------------------------------------------

@pytest.fixture
def bpf_object() -> Iterator[ObjectFactory]:
    """Factory: ``bpf_object("exec")`` or ``bpf_object("path/x.bpf.o", config=...,
    attach=[...])`` -> loaded, attached Object; all closed at teardown."""
    factory = ObjectFactory()
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def bpf_events() -> Iterator[Callable[..., EventCollector]]:
    """Factory: ``bpf_events(obj, "events", event="my_event")`` -> EventCollector."""
    made: List[EventCollector] = []

    def make(obj: "Object", map_name: str = "events", *, event: Optional[str] = None,
             **kw: Any) -> EventCollector:
        c = EventCollector(obj.ring_buffer(map_name, event=event, **kw))
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.close()


@pytest.fixture
def bpf_test_run() -> Callable[..., "TestRun"]:
    """``bpf_test_run(prog, ctx, repeat=1, retval=0)`` -> TestRun (see run_program)."""
    return run_program
