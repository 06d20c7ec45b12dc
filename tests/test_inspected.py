"""The stored inspection of the shipped objects (pytracers/elf/_inspected.py,
written by build.py) is what the full checks say, and is used only for
exactly those bytes."""
from __future__ import annotations

import glob
import os

import pytest

import pytracers
from pytracers.elf import _inspected
from pytracers.elf import inspect as elf_inspect
from pytracers.errors import InvalidObjectError

# pure file checks: the kernel matrix deselects these (they run on the host)
pytestmark = pytest.mark.kernel_independent

SHIPPED = sorted(glob.glob(os.path.join(pytracers.objects_dir(), "*.bpf.o")))


def test_data_is_current_for_the_checking_code():
    assert _inspected.FORMAT == elf_inspect.INSPECTED_FORMAT
    assert _inspected.VALIDATOR_DIGEST == elf_inspect.validator_digest(), \
        "pytracers/elf/inspect.py or validate.py changed: run `python build.py` and commit"


@pytest.mark.parametrize("path", SHIPPED, ids=os.path.basename)
def test_stored_result_equals_a_full_inspection(path):
    with open(path, "rb") as f:
        data = f.read()
    stored = elf_inspect._prevalidated(path, data)
    assert stored is not None, f"{path} has no stored inspection: run `python build.py`"
    full = elf_inspect._inspect(path, data)
    assert stored == full
    assert list(stored.programs) == list(full.programs)
    assert list(stored.variables) == list(full.variables)


def test_one_changed_byte_goes_through_the_full_checks(tmp_path):
    with open(os.path.join(pytracers.objects_dir(), "features.bpf.o"), "rb") as f:
        data = bytearray(f.read())
    data[4] = 1                      # EI_CLASS: 32-bit
    assert elf_inspect._prevalidated("x.bpf.o", bytes(data)) is None
    bad = tmp_path / "x.bpf.o"
    bad.write_bytes(bytes(data))
    with pytest.raises(InvalidObjectError):
        pytracers.open(str(bad))


def test_stale_checking_code_disables_the_data(monkeypatch):
    path = SHIPPED[0]
    with open(path, "rb") as f:
        data = f.read()
    monkeypatch.setattr(elf_inspect, "_SHIPPED", None)
    monkeypatch.setattr(elf_inspect, "validator_digest", lambda: "0" * 64)
    assert elf_inspect._prevalidated(path, data) is None
