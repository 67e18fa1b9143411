"""Reading CIFAR-10's python batches without letting a crafted file run code.

A pickle may name any importable function and call it while it loads (``os.system`` is two
opcodes away), and the batches are often copied from mirrors or shared folders, so the
unpickler here resolves only the few globals a real batch holds: numpy's array and dtype
builders. Plain dicts, lists, ints and bytes need no global at all.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import pickle
from pathlib import Path
from typing import Any
from typing_extensions import override

import numpy as np

from gan_lightning.errors import DataError

# (module, name) as a pickle spells them. The official files were written by numpy 1 under
# Python 2 (numpy.core...); numpy 2 writes numpy._core...; protocol 5 rebuilds an array with
# _frombuffer instead of _reconstruct; a Python 3 pickle of protocol < 3 writes bytes as
# _codecs.encode(text, "latin1").
ALLOWED_GLOBALS = frozenset(
    [(f"{core}.multiarray", "_reconstruct") for core in ("numpy.core", "numpy._core")]
    + [(f"{core}.numeric", "_frombuffer") for core in ("numpy.core", "numpy._core")]
    + [("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")]
)

# numpy 2 still answers to numpy.core but warns on every access; numpy 1 may lack numpy._core.
_NUMPY_CORE = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"


class CIFARBatchUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global outside :data:`ALLOWED_GLOBALS`, naming ``path``."""

    def __init__(self, file, path: Path) -> None:
        # "bytes" turns the Python 2 str keys of the official files into b"data", b"labels".
        super().__init__(file, encoding="bytes")
        self.path = path

    @override
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            # Named as Python 3 would import it: a protocol-2 pickle spells subprocess "commands".
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
            raise DataError(
                f"{self.path} asks to load {module}.{name}, which a CIFAR-10 batch never contains; "
                "it is refused (delete the folder and download the dataset again)."
            )
        for core in ("numpy.core", "numpy._core"):
            if module.startswith(core + "."):
                module = _NUMPY_CORE + module[len(core) :]
        return getattr(importlib.import_module(module), name)


def load_cifar_batch(path: Path) -> Any:
    """The unpickled contents of one CIFAR-10 batch file, read with :class:`CIFARBatchUnpickler`."""
    with open(path, "rb") as f:
        return CIFARBatchUnpickler(f, path).load()
