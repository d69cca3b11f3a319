"""A restricted unpickler for the pickles we read from outside: the MSRA / Detectron ImageNet
weights (``R-50.pkl``, ``R-101.pkl``) and CIFAR-10's python batches (``data_batch_1`` ...).

Both are pickles of plain data: dicts, lists, tuples, strings, bytes, numbers and numpy arrays.
A pickle can call any importable function while it loads (``os.system`` included), so
:func:`safe_load` lets it reach only the functions that rebuild numpy arrays, dtypes and
scalars; any other global stops the load *before* it is looked up or called, with one line
naming the file and the global::

    UnsafePickleError: evil.pkl: refused to load: it asks for posix.system; a pickle read here
    may only build dicts, lists, strings, bytes, numbers and numpy arrays (nothing in it was run)

What is let through, and why each is harmless:

* ``numpy.core.multiarray._reconstruct`` (``numpy._core`` in numpy 2), only as numpy pickles
  an array, ``_reconstruct(numpy.ndarray, (0,), b"b")``: an empty array, filled by its
  ``__setstate__`` from raw bytes (``numpy.ndarray`` cannot be called otherwise).
* ``numpy.dtype``, for the kinds ``b i u f c S U`` only (no object, void or datetime dtypes,
  which would let raw bytes stand for Python objects); a dtype's ``__setstate__`` may set its
  byte order and size, never fields or sub-arrays.
* ``numpy.core.multiarray.scalar`` (a numpy number from a checked dtype and raw bytes) and
  ``numpy.core.numeric._frombuffer`` (arrays in pickle protocol 5).
* ``_codecs.encode(text, "latin1")``: how Python 3 writes ``bytes`` at protocols 0-2.
* BUILD (``__setstate__``) only on arrays and dtypes.

Python 2 pickles (both published files are) are read with ``encoding="latin1"``, as Detectron2
and torchvision do: Python 2 ``str`` becomes ``str`` and numpy takes its raw bytes back from it.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
from typing import Any, BinaryIO

import numpy as np

__all__ = ["UnsafePickleError", "safe_load"]

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

_ALLOWED_KINDS = "biufcSU"
_ALLOWED_TEXT = "dicts, lists, strings, bytes, numbers and numpy arrays"


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for something other than plain data; nothing in it was run."""


class _Refused(Exception):
    """Raised inside the unpickler; :func:`safe_load` turns it into one line naming the file."""


def _checked_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype:
        raise _Refused(f"a numpy array of dtype {dtype} (only numbers and strings are allowed)")
    return dtype


def _dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    if not isinstance(spec, str):
        raise _Refused(f"a numpy dtype built from {type(spec).__name__} {spec!r}")
    return _checked_dtype(np.dtype(spec, align, copy))


# what ``numpy.ndarray`` in a pickle stands for: accepted by ``_reconstruct`` only, so the pickle
# cannot call ``ndarray(shape, dtype, buffer, ...)`` itself
_NDARRAY = type("ndarray_for_reconstruct_only", (), {})()


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    if subtype is not _NDARRAY or typecode not in (b"b", "b"):
        raise _Refused(f"an array made by _reconstruct({subtype!r}, ..., {typecode!r})")
    return _multiarray._reconstruct(np.ndarray, shape, typecode)


def _scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype):
        raise _Refused(f"a numpy scalar of {dtype!r}")
    return _multiarray.scalar(_checked_dtype(dtype), data)


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(dtype, np.dtype):
        raise _Refused(f"an array of {dtype!r}")
    return _numeric._frombuffer(buffer, _checked_dtype(dtype), shape, order)


def _encode(text: Any, encoding: str = "utf-8") -> bytes:
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise _Refused(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


# (module, name) in the pickle -> what is called instead; numpy 1 and 2 spell the modules apart
_GLOBALS = {
    **{(m, "_reconstruct"): _reconstruct
       for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "scalar"): _scalar for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "_frombuffer"): _frombuffer for m in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _encode,
}


class _RestrictedUnpickler(pickle._Unpickler):  # the Python one: its opcodes can be overridden
    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None

    def load_build(self) -> None:
        state, inst = self.stack[-1], self.stack[-2]
        if isinstance(inst, np.dtype):
            # (version, byte order, subarray, names, fields, elsize, alignment, flags)
            if not isinstance(state, tuple) or len(state) < 5 or any(
                    v is not None for v in state[2:5]):
                raise _Refused(f"a numpy dtype with fields or sub-arrays ({state!r:.80})")
        elif not isinstance(inst, np.ndarray):
            raise _Refused(f"__setstate__ of a {type(inst).__name__}")
        elif not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], np.dtype)):
            raise _Refused("an array state other than (version, shape, dtype, fortran, data)")
        else:
            _checked_dtype(state[2])
        super().load_build()
        if isinstance(inst, np.dtype):
            _checked_dtype(inst)

    dispatch[pickle.BUILD[0]] = load_build

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused(f"a persistent id {pid!r:.80}")


def safe_load(file: str | os.PathLike | BinaryIO | bytes, *, source: str | None = None,
              encoding: str = "latin1") -> Any:
    """Unpickle ``file`` (a path, an open binary file or the bytes themselves), building only
    plain data and numpy arrays (see the module docstring).

    ``source`` names the file in errors (default: the path). Raises :class:`UnsafePickleError`
    when the pickle asks for anything else, and ``pickle.UnpicklingError`` naming the file when
    it is not a readable pickle.
    """
    if isinstance(file, (str, os.PathLike)):
        source = source or os.fspath(file)
        with open(file, "rb") as f:
            return safe_load(f, source=source, encoding=encoding)
    if isinstance(file, (bytes, bytearray, memoryview)):
        file = io.BytesIO(file)
    source = source or getattr(file, "name", "<pickle>")
    try:
        return _RestrictedUnpickler(file, encoding=encoding).load()
    except _Refused as refused:
        raise UnsafePickleError(
            f"{source}: refused to load: it asks for {refused}; a pickle read here may only "
            f"build {_ALLOWED_TEXT} (nothing in it was run)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, UnicodeDecodeError) as error:
        raise pickle.UnpicklingError(
            f"{source}: not a readable pickle ({_ALLOWED_TEXT} expected): "
            f"{type(error).__name__}: {error}") from None
