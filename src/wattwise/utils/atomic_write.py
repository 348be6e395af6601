"""Write a file so that readers see the old version or the whole new one, never half of one.

The bytes go to a temporary file in the same folder (so the rename stays on one file system),
are flushed to the disk, and replace the target with `os.replace`. When writing fails (a full
disk, a folder that is not writable) the temporary file is removed, the old file is left as it
was, and the error names the file and the reason in one line (`OutputError`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from wattwise.utils.errors import OutputError


def _into_place(path: str | os.PathLike, what: str, fill: Callable[[Path], None]) -> Path:
    """`fill` writes the new file at a temporary name beside `path`, which then replaces `path` by a
    rename. On failure the temporary file is removed, `path` is left as it was, and the OutputError
    names `what`, the file and the reason."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fill(tmp)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        kept = " (the previous file is kept)" if path.exists() else ""
        failure = OutputError(f"could not write {what} {path}: {err.strerror or err}{kept}")
        failure.errno = err.errno
        raise failure from err
    return path


def atomic_write(path: str | os.PathLike, data: bytes | memoryview, what: str) -> Path:
    """Write `data` to `path` through a temporary file and a rename; OutputError naming `what`."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return _into_place(path, what, write)


def link_atomically(source: str | os.PathLike, path: str | os.PathLike, what: str) -> Path:
    """`path` becomes a second name of the file `source` (a hard link; a copy where the file system
    has none), through a temporary name and a rename like `atomic_write`; OutputError naming `what`."""

    def link(tmp: Path) -> None:
        tmp.unlink(missing_ok=True)  # left by a crashed earlier attempt
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)

    return _into_place(path, what, link)


def save_atomically(obj: object, path: str | os.PathLike, what: str) -> Path:
    """`torch.save(obj, path)` through `atomic_write`: serialised in memory, then written whole."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, buffer.getbuffer(), what)
