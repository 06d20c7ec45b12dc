"""loaded.globals: typed reads and writes of .bss, .data and .rodata variables
after load (through the mmapped section maps), and .bss/.data values set
before load.  tests/objects/globals.bpf.c keeps its results in globals, as
many libbpf tools do: a .bss counter and histogram, .data initial values."""
from __future__ import annotations

import ctypes
import os

import numpy as np
import pytest

import pytracers
from pytracers.errors import (BadArgumentError, BadTypeError, ClosedError,
                              TargetNotFoundError)

HERE = os.path.dirname(os.path.abspath(__file__))
GLOBALS = os.path.join(HERE, "objects", "globals.bpf.o")
_libc = ctypes.CDLL(None, use_errno=True)


def _open(**config):
    o = pytracers.open(GLOBALS)
    o.config["my_pid"] = os.getpid()
    for k, v in config.items():
        o.config[k] = v
    return o


def test_initial_values_typed_from_btf():
    """Every variable decodes by its BTF type: ints, a char array as str, a
    u64 array as a numpy array, a struct as a record with fields named
    count and index."""
    with _open().load() as obj:
        g = obj.globals
        assert set(g) == {"my_pid", "calls", "hist", "last_arg", "step", "label", "origin",
                          "scale"}
        assert g["my_pid"] == os.getpid() and g["calls"] == 0 and g["step"] == 3
        assert g["label"] == "hello" and g["scale"] == 1
        h = g["hist"]
        assert isinstance(h, np.ndarray) and h.dtype == np.uint64 and h.shape == (16,)
        assert not h.any()
        o = g["origin"]
        assert (o.x, o.y, o.count, o.index) == (1, -2, 5, 6)
        assert g.section_of("calls") == ".bss" and g.section_of("scale") == ".rodata"


def test_counters_and_histogram_follow_the_program():
    """getpgid(1), (2), (2), (17) with step=5 and scale=2 set before load:
    calls == 20, hist[1] == hist[2] == 4 (17 & 15 == 1), last_arg == 17,
    origin.count went from 5 to 9; a live view sees later updates."""
    with _open(step=5, scale=2).load() as obj:
        link = obj.programs["count_getpgid"].attach()
        g = obj.globals
        view = g.view("hist")
        for a in (1, 2, 2, 17):
            _libc.getpgid(a)
        assert g["calls"] == 20 and g["last_arg"] == 17
        expect = np.zeros(16, np.uint64)
        expect[1] = expect[2] = 4
        assert (g["hist"] == expect).all() and (view == expect).all()
        assert g["origin"].count == 9
        _libc.getpgid(3)
        assert view[3] == 2                   # the view is the kernel's memory
        link.close()
        del view


def test_writes_after_load_reach_the_program():
    """Writing .bss/.data after load: the program sees the new values (calls
    reset to 0 then +step, where step was raised to 100)."""
    with _open().load() as obj:
        g = obj.globals
        link = obj.programs["count_getpgid"].attach()
        _libc.getpgid(1)
        assert g["calls"] == 3
        g["calls"] = 0
        g["step"] = 100
        g["label"] = "bye"
        g["origin"] = {"index": 99, "y": 7}
        g["hist"] = np.arange(16)
        _libc.getpgid(1)
        assert g["calls"] == 100 and g["label"] == "bye"
        o = g["origin"]
        assert (o.x, o.y, o.index, o.count) == (1, 7, 99, 7)
        assert g["hist"].tolist() == [0, 2] + list(range(2, 16))
        link.close()


def test_bss_and_data_set_before_load():
    """config[...] takes .bss and .data values before load (today's tools set
    my_pid before load): the program filters on the pid set so."""
    o = _open(calls=1000, label="pre", hist=list(range(16)), origin={"x": 42})
    with o.load() as obj:
        g = obj.globals
        assert g["calls"] == 1000 and g["label"] == "pre" and g["origin"].x == 42
        assert g["hist"].tolist() == list(range(16))
        link = obj.programs["count_getpgid"].attach()
        _libc.getpgid(0)
        assert g["calls"] == 1003
        link.close()


def test_rodata_is_read_only_after_load_and_errors_are_clear():
    with _open(scale=9).load() as obj:
        g = obj.globals
        assert g["scale"] == 9
        with pytest.raises(BadArgumentError, match="read-only after load"):
            g["scale"] = 3
        assert g["scale"] == 9
        with pytest.raises(TargetNotFoundError) as ei:
            g["cals"]
        assert "calls" in ei.value.suggestions
        with pytest.raises(BadArgumentError, match="does not fit"):
            g["my_pid"] = 1 << 40
        with pytest.raises(BadArgumentError, match="holds at most 7"):
            g["label"] = "too long!"
        with pytest.raises(BadArgumentError, match="16 elements"):
            g["hist"] = [1, 2]
        with pytest.raises(BadTypeError):
            g["origin"] = 5
        with pytest.raises(BadTypeError):
            g.view("calls")
        assert g.raw("my_pid") == os.getpid().to_bytes(4, "little")
    with pytest.raises(ClosedError):
        obj.globals["calls"]
