"""Generated data directories that appear whole or not at all: the synthetic world and the synthetic tasks are
written into a fresh directory beside their destination and renamed into place in one step, so a reader (another
test worker, rank or run) never sees half a dataset, and a failed write leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_new_directory(out: str | os.PathLike, what: str, write: Callable[[Path], None]) -> Path:
    """`write(directory)` into a temporary directory, then renamed to `out`; refuses an existing `out` (`what` names
    the data in the message). Returns `out`."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; {what} is written into a new directory only")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write(tmp)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def cached_directory(path: Path, marker: str, what: str, write: Callable[[Path], None]) -> Path:
    """`path`, written on first use (`write_new_directory`) unless its `marker` file is there. Processes that race
    all write; the first rename wins and the others use its copy."""
    if not (path / marker).is_file():
        try:
            write_new_directory(path, what, write)
        except OSError:  # exists already, or (a rename onto a directory just completed) not empty
            if not (path / marker).is_file():  # another process won the race only if it finished
                raise
    return path
