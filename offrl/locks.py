"""Exclusive file locks that the kernel releases however their holder ends, kill -9 included.

A run directory and a dataset id each have one writer at a time: the second process that
asks is refused at once with a message naming the holder, instead of waiting or writing
beside it. Kept free of jax so that `offrl datasets ...` starts fast."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Callable, Iterator

_held: set[Path] = set()  # locks this process holds: taking one again (a command, then its write) nests


@contextlib.contextmanager
def exclusive(path: Path, in_use: Callable[[str], Exception]) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (made if need be) for the block. If another
    process holds it, raise `in_use(holder)`, holder naming it (e.g. "process 1234")."""
    path = Path(path).resolve()
    if path in _held:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip()
            raise in_use(f"process {pid}" if pid else "another process") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        _held.add(path)
        try:
            yield
        finally:
            _held.discard(path)  # closing the file releases the lock
