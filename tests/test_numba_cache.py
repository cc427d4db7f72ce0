"""Numba's on-disk cache under several processes compiling one kernel at once
(``memristor_hil.numba_cache``): each signature's index entry names its own machine code."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

pytest.importorskip("fcntl")

from numba.core import caching  # noqa: E402

from memristor_hil import numba_cache  # noqa: E402


def _two_writers_interleaved(tmp_path, save) -> dict:
    """Two cache writers of one function, the first paused between reading the index and
    writing it (as a second process can be), each saving its own signature."""
    files = [caching.IndexDataCacheFile(str(tmp_path), "f-1.py311", "stamp") for _ in (0, 1)]
    first_read = threading.Event()
    load = caching.IndexDataCacheFile._load_index

    def slow_load(self):
        overloads = load(self)
        if self is files[0] and not first_read.is_set():
            first_read.set()
            time.sleep(0.3)  # the second writer runs meanwhile
        return overloads

    caching.IndexDataCacheFile._load_index = slow_load
    try:
        a = threading.Thread(target=save, args=(files[0], "sig-a", b"code of a"))
        a.start()
        first_read.wait(5)
        save(files[1], "sig-b", b"code of b")
        a.join()
    finally:
        caching.IndexDataCacheFile._load_index = load
    reader = caching.IndexDataCacheFile(str(tmp_path), "f-1.py311", "stamp")
    return {key: reader.load(key) for key in ("sig-a", "sig-b")}


def test_numbas_own_writer_can_give_one_signature_anothers_code(tmp_path):
    """The race this module closes, shown on numba's unwrapped writer: both pick data file
    1, and a key ends up missing or naming the other signature's code."""
    assert numba_cache.install()
    got = _two_writers_interleaved(tmp_path, numba_cache.NUMBA_SAVE)
    assert got != {"sig-a": b"code of a", "sig-b": b"code of b"}


def test_the_locked_writer_keeps_each_signature_with_its_own_code(tmp_path):
    assert numba_cache.install()
    got = _two_writers_interleaved(tmp_path, numba_cache.locked_save)
    assert got == {"sig-a": b"code of a", "sig-b": b"code of b"}


def test_kernels_compiled_by_processes_at_once_load_back_right(tmp_path):
    """Four processes compile one cached kernel at once, each for another argument type,
    then a fifth loads every signature from the cache: each returns its own type's result."""
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        from memristor_hil.emulator import kernels  # installs the lock
        dtype = sys.argv[1]
        x = np.arange(5, dtype=dtype)
        print(kernels.gather(x, np.array([4, 0]), np.empty(2, dtype)).tolist())
        """
    )
    env = {"NUMBA_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    dtypes = ["float64", "float32", "int64", "int32"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, d], env=env, stdout=subprocess.PIPE, text=True
        )
        for d in dtypes
    ]
    assert [p.communicate(timeout=300)[0].strip() for p in procs] == [
        "[4.0, 0.0]", "[4.0, 0.0]", "[4, 0]", "[4, 0]"
    ]  # fmt: skip
    again = [
        subprocess.run([sys.executable, "-c", code, d], env=env, capture_output=True, text=True)
        for d in dtypes
    ]
    assert [r.stdout.strip() for r in again] == ["[4.0, 0.0]", "[4.0, 0.0]", "[4, 0]", "[4, 0]"]
