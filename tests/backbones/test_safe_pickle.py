"""The restricted unpickler: plain data and numpy arrays load (Python 2 and 3 pickles), anything
else is refused with one line naming the file and the global, before it runs."""

import os
import pickle
import pickletools

import numpy as np
import pytest

from backbones.safe_pickle import UnsafePickleError, safe_load


def _data():
    return {b"weights": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
            b"labels": [3, 1, 4], b"name": b"batch 1", "text": "unicode",
            b"pixels": np.arange(256, dtype=np.uint8).reshape(4, 64), b"f64": np.float64(2.5),
            b"nested": {b"ints": np.array([-1, 2**40], dtype=">i8"), b"t": (1.5, None, True)}}


def _check_equal(out, keys_as_str):
    k = (lambda s: s.decode()) if keys_as_str else (lambda s: s)
    assert out[k(b"weights")].dtype == np.float32
    np.testing.assert_array_equal(out[k(b"weights")], _data()[b"weights"])
    pixels = np.arange(256, dtype=np.uint8).reshape(4, 64)
    np.testing.assert_array_equal(out[k(b"pixels")], pixels)
    assert out[k(b"labels")] == [3, 1, 4] and out[k(b"f64")] == 2.5
    assert out["text"] == "unicode"
    ints = out[k(b"nested")][k(b"ints")]
    assert ints.dtype.str[1:] == "i8" and ints.tolist() == [-1, 2**40]  # numpy may swap order
    assert out[k(b"nested")][k(b"t")] == (1.5, None, True)


def test_python2_pickle_as_published_loads(tmp_path, py2_pickle):
    path = py2_pickle(_data(), tmp_path / "py2.pkl")
    ops = {(op.name, arg) for op, arg, _ in pickletools.genops(path.read_bytes())}
    # what Python 2's cPickle wrote: str as BINSTRING, numpy 1's module names, no _codecs
    assert ("GLOBAL", "numpy.core.multiarray _reconstruct") in ops
    assert any(name == "BINSTRING" for name, _ in ops)
    assert not any(name == "GLOBAL" and "_codecs" in str(arg) for name, arg in ops)
    out = safe_load(path)  # latin1: Python 2 str -> str, as Detectron2 and torchvision read them
    _check_equal(out, keys_as_str=True)
    assert out["name"] == "batch 1"


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_python3_pickles_of_every_protocol_load(protocol):
    out = safe_load(pickle.dumps(_data(), protocol=protocol))
    _check_equal(out, keys_as_str=False)


def test_malicious_pickle_is_refused_without_running(tmp_path, runs_code):
    marker = tmp_path / "marker"
    payload = pickle.dumps({b"conv1_w": np.zeros(3), b"x": runs_code(f"touch {marker}")},
                           protocol=2)
    pickle.loads(payload)  # the plain unpickler runs it: the payload is real
    assert marker.exists()
    marker.unlink()
    path = tmp_path / "R-50.pkl"
    path.write_bytes(payload)
    with pytest.raises(UnsafePickleError) as err:
        safe_load(path)
    message = str(err.value)
    assert not marker.exists()
    assert "\n" not in message and str(path) in message
    assert f"asks for {os.system.__module__}.system" in message  # posix.system on Linux
    assert "nothing in it was run" in message


@pytest.mark.parametrize("obj, refused", [
    (np.array([None, 1], dtype=object), "dtype object"),
    (np.zeros(2, dtype=[("a", "f4"), ("b", "i4")]), "dtype"),
    (np.array(["2020-01-01"], dtype="datetime64[D]"), "dtype datetime64"),
    (__import__("collections").OrderedDict(a=1), "collections.OrderedDict"),
    (__import__("fractions").Fraction(1, 3), "fractions.Fraction"),
])
def test_anything_but_plain_data_is_refused(obj, refused):
    for protocol in (2, 5):
        with pytest.raises(UnsafePickleError, match=refused):
            safe_load(pickle.dumps({"x": obj}, protocol=protocol), source="f.pkl")


def test_ndarray_cannot_be_called_directly_and_garbage_names_the_file():
    # GLOBAL numpy.ndarray, then REDUCE with (shape,): only numpy's own array recipe may use it
    forged = b"\x80\x02cnumpy\nndarray\nK\x03\x85R."
    with pytest.raises(pickle.UnpicklingError, match="forged.pkl: not a readable pickle"):
        safe_load(forged, source="forged.pkl")
    with pytest.raises(pickle.UnpicklingError, match="junk.pkl: not a readable pickle"):
        safe_load(b"not a pickle at all", source="junk.pkl")
