"""Numba's on-disk cache made safe for several processes compiling at once.

Every compiled kernel here is cached (``@njit(cache=True)``), and several processes often
compile the same kernel at once on a cold cache: a sweep's Dask workers, a lab's tests under
xdist, a host beside the emulator service. Numba's ``IndexDataCacheFile.save`` (checked on
numba 0.60 and 0.68, ``numba/core/caching.py``) reads a function's index, picks the first data
file number the index does not use, writes the index, then the data, with no lock: two
processes saving two signatures of one kernel both pick number 1, and the index can end up
naming the one signature while the data file holds the other's machine code. A third process
then loads that code for arguments of another type: a run failed with "can't unbox array from
PyObject into native value" in CI this way (a sweep's two workers, after the NengoDL
environment's numba had rewritten the index), and arguments of the same size but another type
would be read as the wrong type without any error.

:func:`install` wraps ``save`` so that the whole read-pick-write runs under an exclusive
``fcntl.flock`` on a lock file beside the index, and writes the data before the index names
it (a reader that finds the key then finds its own data). Loads need no lock: both files are
replaced atomically (numba writes a temporary file and renames it).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["NUMBA_SAVE", "install", "locked_save"]

#: numba's own ``IndexDataCacheFile.save``, as :func:`install` found it (None before).
NUMBA_SAVE: Any = None


def install() -> bool:
    """Wrap numba's cache writer once per process (see the module); True if it is wrapped.

    Without ``fcntl`` (Windows) or where numba's cache file class lacks the members this
    relies on, nothing is changed and False is returned.
    """
    try:
        import fcntl  # noqa: F401 - POSIX only

        from numba.core import caching
    except ImportError:
        return False
    cls = getattr(caching, "IndexDataCacheFile", None)
    needed = ("save", "_load_index", "_save_index", "_save_data", "_data_name")
    if cls is None or not all(hasattr(cls, n) for n in needed):
        return False
    if getattr(cls.save, "__memristor_hil_locked__", False):
        return True
    global NUMBA_SAVE
    NUMBA_SAVE = cls.save
    cls.save = locked_save
    return True


def locked_save(self: Any, key: Any, data: Any) -> None:
    """``IndexDataCacheFile.save`` under an exclusive lock, data before index."""
    with _exclusive(self._index_path + ".lock"):
        overloads = self._load_index()
        data_name = overloads.get(key)
        if data_name is None:
            existing = set(overloads.values())
            number = 1
            while self._data_name(number) in existing:
                number += 1
            data_name = self._data_name(number)
        self._save_data(data_name, data)
        if overloads.get(key) != data_name:
            overloads[key] = data_name
            self._save_index(overloads)


locked_save.__memristor_hil_locked__ = True  # type: ignore[attr-defined]


@contextlib.contextmanager
def _exclusive(path: str) -> Iterator[None]:
    import fcntl

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
