"""pytracers ships type information (py.typed) and mypy passes on it."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# pure file/type checks: the kernel matrix deselects these (they run on the host)
pytestmark = pytest.mark.kernel_independent


def test_py_typed_marker_is_shipped():
    assert os.path.isfile(os.path.join(ROOT, "pytracers", "py.typed"))
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        assert '"py.typed"' in f.read()


def test_mypy_is_clean_on_the_package():
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed in this environment (pip install .[test])")
    if os.environ.get("PYTRACERS_VM_KERNEL"):
        pytest.skip("type checking does not depend on the kernel: it runs on the host only "
                    "(a cold mypy run under qemu TCG takes minutes)")
    res = subprocess.run([sys.executable, "-m", "mypy", "pytracers/"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Success" in res.stdout
