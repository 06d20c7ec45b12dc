"""The API reference generator (scripts/gen_api_docs.py) and the guides."""
from __future__ import annotations

import functools
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# pure file/docs checks: the kernel matrix deselects these (they run on the host)
pytestmark = pytest.mark.kernel_independent


@functools.lru_cache(maxsize=None)
def _generator():
    spec = importlib.util.spec_from_file_location(
        "gen_api_docs", os.path.join(ROOT, "scripts", "gen_api_docs.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_api_reference_covers_the_public_api():
    gen = _generator()
    text = gen.generate()
    assert "\0" not in text
    for heading in ("## `pytracers.object`", "## `pytracers.aio`",
                    "## `pytracers.pytest_plugin`", "## `pytracers.agent`"):
        assert heading in text
    import pytracers.aio
    for name in pytracers.aio.__all__:
        assert f"pytracers.aio.{name}" in text, name
    # signatures come from the code, docstrings are converted from reST
    assert "### `pytracers.aio.batches(source: Any, timeout: Optional[float] = None, *" in text
    assert ":class:`" not in text and "``" not in text.replace("```", "")


def test_rst_conversion():
    gen = _generator()
    md = gen.rst_to_md("See :class:`~pytracers.ringbuf.RingBuffer` and ``x``.\n\n"
                       "=====  =====\nkind   cost\n=====  =====\ntp     a ``b``\n=====  =====\n")
    assert md.startswith("See `RingBuffer` and `x`.")
    assert "| kind | cost |\n|---|---|\n| tp | a `b` |" in md


def test_guides_exist():
    for name in ("which-probe.md", "api.md"):
        assert os.path.getsize(os.path.join(ROOT, "docs", name)) > 1000
