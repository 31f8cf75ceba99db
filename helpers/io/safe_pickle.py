"""Reading pickles without running their code.

``pickle.load`` imports and calls whatever a file names: a crafted ``.pkl`` runs code. These
readers admit only the classes the expected files contain and refuse anything else with an
:class:`~helpers.core.errors.InputError` naming the file, the class found and the opt-in
(``trusted=True``: a plain ``pickle.load``, for files from a source you trust).

* ``"arrays"``: numpy arrays and plain containers (cryoDRGN's ``labels.pkl``, ``z.N.pkl``);
* ``"tables"``: the above plus pandas DataFrames / Series and their indexes (the challenge's
  published map-to-map result pickles, ``challenge-metrics.md`` §1.4).
"""
from __future__ import annotations

import io as _io
import pickle
from pathlib import Path

from helpers.core.errors import InputError

_NUMPY = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
          ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
          ("numpy._core.numeric", "_frombuffer"), ("numpy.core.multiarray", "scalar"),
          ("numpy._core.multiarray", "scalar"),
          ("_codecs", "encode")}  # protocol 2 stores an array's bytes as a latin-1 string
_PANDAS = {("pandas.core.frame", "DataFrame"), ("pandas.core.series", "Series"),
           ("pandas.core.indexes.base", "Index"), ("pandas.core.indexes.base", "_new_Index"),
           ("pandas.core.indexes.range", "RangeIndex"), ("pandas.core.internals.managers", "BlockManager"),
           ("pandas.core.internals.managers", "SingleBlockManager"), ("pandas._libs.internals", "_unpickle_block"),
           ("pandas.core.internals.blocks", "new_block"), ("builtins", "slice")}
KINDS = {"arrays": _NUMPY, "tables": _NUMPY | _PANDAS}


class _Restricted(pickle.Unpickler):
    def __init__(self, fh, allowed):
        super().__init__(fh)
        self.allowed = allowed

    def find_class(self, module, name):
        if (module, name) in self.allowed or (module == "numpy" and name.endswith("DType")) or \
                (module.startswith("numpy.dtypes") and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed")


def load(path, kind: str = "arrays", trusted: bool = False, fix: str | None = None):
    """The object pickled in ``path``, admitting only the classes of ``kind`` ("arrays" or
    "tables") unless ``trusted``. Raises InputError for a refused class or an unreadable file
    (``fix``: the advice it gives; by default, to pass ``trusted=True`` for a trusted source)."""
    fix = fix or "Give the file the method or the challenge wrote; if you trust its source, pass trusted=True."
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror}).", "Check the path.") from None
    if trusted:
        return pickle.loads(data)
    try:
        return _Restricted(_io.BytesIO(data), KINDS[kind]).load()
    except pickle.UnpicklingError as exc:
        raise InputError(path, f"holds something other than {'numpy arrays' if kind == 'arrays' else 'numpy/pandas data'}"
                               f" ({exc}); it is not loaded, since unpickling it could run code.",
                         fix) from None
    except (EOFError, ValueError, TypeError, AttributeError, ImportError) as exc:
        raise InputError(path, f"is not a readable pickle ({type(exc).__name__}: {exc}).",
                         "Give the file the method or the challenge wrote.") from None
