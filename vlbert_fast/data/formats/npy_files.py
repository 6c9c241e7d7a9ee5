"""The .npy files the feature shards are made of: written by appending rows (the row count is patched into the
header at the end), or whole; read back as memory maps whose dtype, shape and size are checked against what the
index says, so a truncated or foreign file is a FormatError naming it rather than a crash or silent garbage."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from .errors import FormatError

HEADER_BYTES = 128  # a fixed .npy header length, so the leading dimension can be patched in place at the end


def npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 .npy header padded to a fixed length (the format allows any space padding)."""
    text = repr({"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape})
    total = HEADER_BYTES
    while 10 + len(text) + 1 > total:
        total += 64
    body = (text + " " * (total - 10 - len(text) - 1) + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body


class NpyAppender:
    """Appends rows of `row_shape` to a new .npy file; `finish()` writes the row count into the header, flushes and
    fsyncs (the data reaches the disk before the index that vouches for it)."""

    def __init__(self, path: Path, dtype: str, row_shape: tuple[int, ...]):
        self.path, self.dtype, self.row_shape = path, np.dtype(dtype), tuple(row_shape)
        self.rows = 0
        self.file = open(path, "wb")
        self.file.write(npy_header(self.dtype, (0, *self.row_shape)))

    def append(self, rows: np.ndarray) -> None:
        """Appends `rows` ([n, *row_shape], or one row of row_shape), cast to the file's dtype."""
        block = np.ascontiguousarray(rows, dtype=self.dtype)
        count = 1 if block.shape == self.row_shape else block.shape[0]
        self.file.write(block.tobytes())
        self.rows += count

    def finish(self) -> None:
        self.file.seek(0)
        self.file.write(npy_header(self.dtype, (self.rows, *self.row_shape)))
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def abort(self) -> None:
        self.file.close()


def write_npy(path: Path, array: np.ndarray) -> None:
    """Writes a whole array as .npy and fsyncs it."""
    with open(path, "wb") as out:
        out.write(npy_header(array.dtype, array.shape))
        out.write(np.ascontiguousarray(array).tobytes())
        out.flush()
        os.fsync(out.fileno())


def read_npy_header(path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, shape, data offset) from a .npy file's header; FormatError naming the file when it has none."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            offset = handle.tell()
    except FileNotFoundError:
        raise FormatError(str(path), message="missing", reason="missing shard file") from None
    except (OSError, ValueError, EOFError) as exc:
        raise FormatError(str(path), message=f"unreadable .npy header: {exc}", reason="bad shard file") from None
    if fortran or dtype.hasobject:
        raise FormatError(str(path), message="a Fortran-ordered or object .npy file", reason="bad shard file")
    return dtype, tuple(shape), offset


def check_npy(path: Path, dtype: str, shape: tuple[int | None, ...], what: str) -> tuple[tuple[int, ...], int]:
    """(shape, data offset) of `path` after checking its dtype, shape (None: any length on that axis) and size
    against its header, without mapping it. `what` says where the expectation comes from ("as index.json
    implies"). A mismatch, a truncated file or a missing one is a FormatError naming the file."""
    found_dtype, found_shape, offset = read_npy_header(path)
    want = "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
    fits = len(found_shape) == len(shape) and all(w is None or w == d for w, d in zip(shape, found_shape, strict=False))
    if not fits or found_dtype != np.dtype(dtype):
        raise FormatError(
            str(path),
            None,
            None,
            f"{dtype} {want} {what}",
            f"{found_dtype} {list(found_shape)}",
            reason="shard file disagrees with index",
        )
    nbytes = found_dtype.itemsize * int(np.prod(found_shape))
    size = path.stat().st_size
    if size != offset + nbytes:
        state = "truncated" if size < offset + nbytes else "trailing bytes"
        raise FormatError(
            str(path),
            None,
            None,
            f"{offset + nbytes} bytes ({dtype} {list(found_shape)})",
            f"{size} bytes on disk ({state})",
            reason="truncated shard file" if state == "truncated" else "shard file size",
        )
    return found_shape, offset


def open_npy(path: Path, dtype: str, shape: tuple[int | None, ...], what: str) -> np.ndarray:
    """`path` checked (`check_npy`) and memory-mapped read-only, as a plain ndarray over the map (np.memmap's
    subclass hooks cost microseconds on every index, and a reader indexes a dozen times per record)."""
    found_shape, offset = check_npy(path, dtype, shape, what)
    if int(np.prod(found_shape)) == 0:  # mmap cannot map nothing
        return np.zeros(found_shape, dtype)
    return np.memmap(path, dtype=np.dtype(dtype), mode="r", offset=offset, shape=found_shape).view(np.ndarray)
