"""pytest plugin used by scripts/vmtest: record every test's outcome.

Load it with ``-p vmtest_results`` (scripts/ on PYTHONPATH).  It does nothing
unless ``VMTEST_RESULTS`` names the output file.  For each test it records:

    nodeid, outcome (passed / failed / skipped / error / xfailed / xpassed),
    skip reason (for skips and xfails), and the probe kind from the test's
    ``@pytest.mark.kind("...")`` marker ("other" without one).

Records are appended to ``$VMTEST_RESULTS + "l"`` (JSON lines) as tests
finish, so a guest killed half way still leaves partial results, and the
complete list plus pytest's summary line is written to ``$VMTEST_RESULTS``
(JSON) at the end of the session.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Optional

import pytest

class _Recorder:
    def __init__(self, path: str):
        self.path = path
        self.records: Dict[str, Dict[str, Any]] = {}
        self.kinds: Dict[str, str] = {}
        self.started = time.time()
        self.exitstatus: Optional[int] = None
        self.summary = ""
        self._lines = open(path + "l", "w", encoding="utf-8")

    # -- collection -----------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items):
        for item in items:
            # A kind given on a parameter (pytest.param(..., marks=...)) is
            # more specific than one on the function.
            callspec = getattr(item, "callspec", None)
            marker = next((m for m in getattr(callspec, "marks", []) if m.name == "kind"), None)
            if marker is None:
                marker = item.get_closest_marker("kind")
            kind = "other"
            if marker is not None:
                name = marker.args[0] if marker.args else marker.kwargs.get("name")
                kind = str(name) if name else "other"
            self.kinds[item.nodeid] = kind

    def pytest_collectreport(self, report):
        if report.failed:
            # A module that does not even import is an error for this kernel.
            rec = self._record(report.nodeid or "<collection>")
            rec["outcome"] = "error"
            rec["message"] = _short(report.longreprtext)
            self._flush(rec)

    # -- running --------------------------------------------------------
    def _record(self, nodeid: str) -> Dict[str, Any]:
        rec = self.records.get(nodeid)
        if rec is None:
            rec = {"nodeid": nodeid, "kind": self.kinds.get(nodeid, "other"),
                   "outcome": None, "skip_reason": None, "duration": 0.0}
            self.records[nodeid] = rec
        return rec

    def pytest_runtest_logreport(self, report):
        rec = self._record(report.nodeid)
        rec["duration"] = round(rec["duration"] + (report.duration or 0.0), 4)
        xfail = getattr(report, "wasxfail", None)
        if report.when == "call":
            if xfail is not None:
                rec["outcome"] = "xfailed" if report.skipped else "xpassed"
                if report.skipped:
                    rec["skip_reason"] = xfail or "xfail"
            else:
                rec["outcome"] = report.outcome
                if report.skipped:
                    rec["skip_reason"] = _skip_reason(report)
            if report.failed:
                rec["message"] = _short(report.longreprtext)
        elif report.when == "setup":
            if report.skipped:
                if xfail is not None:
                    rec["outcome"], rec["skip_reason"] = "xfailed", xfail or "xfail"
                else:
                    rec["outcome"], rec["skip_reason"] = "skipped", _skip_reason(report)
            elif report.failed:
                rec["outcome"], rec["message"] = "error", _short(report.longreprtext)
        elif report.when == "teardown":
            if report.failed:
                rec["outcome"], rec["message"] = "error", _short(report.longreprtext)
            self._flush(rec)

    def _flush(self, rec: Dict[str, Any]) -> None:
        self._lines.write(json.dumps(rec) + "\n")
        self._lines.flush()

    # -- end of session -------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter, exitstatus):
        try:
            parts, _color = terminalreporter.build_summary_stats_line()
            line = ", ".join(text for text, _markup in parts)
        except Exception:
            line = ""
        self.summary = f"{line} in {time.time() - self.started:.2f}s" if line else ""

    def pytest_sessionfinish(self, session, exitstatus):
        self.exitstatus = int(exitstatus)

    def pytest_unconfigure(self, config):
        # Last hook: the terminal summary (and our summary line) is done.
        self._lines.close()
        data = {
            "exitstatus": self.exitstatus,
            "summary": self.summary,
            "duration": round(time.time() - self.started, 2),
            "tests": list(self.records.values()),
        }
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, self.path)


def _skip_reason(report) -> str:
    lr = report.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        reason = str(lr[2])
    else:
        reason = str(lr)
    return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


def _short(text: str, limit: int = 2000) -> str:
    text = text or ""
    return text if len(text) <= limit else "..." + text[-limit:]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "kind(name): the probe kind a test exercises (recorded by vmtest_results)")
    path = os.environ.get("VMTEST_RESULTS")
    if path and not config.pluginmanager.has_plugin("vmtest-recorder"):
        config.pluginmanager.register(_Recorder(path), "vmtest-recorder")
