"""The text-only corpus of pretraining (the original mixes BooksCorpus and English Wikipedia 1:1 with captions):
one text unit per line, UTF-8, optionally gzip-compressed (`.gz`). Blank lines separate nothing and are skipped
(not errors); surrounding whitespace and a leading byte-order mark are dropped."""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator

from .errors import FormatError, SkipCounter


def _open(path: str | os.PathLike):
    source = os.fspath(path)
    try:
        return gzip.open(path, "rb") if source.endswith(".gz") else open(path, "rb")
    except OSError as exc:
        raise FormatError(source, message=f"cannot open: {exc.strerror or exc}", reason="unreadable file") from None


def iter_text_corpus(path: str | os.PathLike, counter: SkipCounter | None = None) -> Iterator[str]:
    """Yields the stripped non-blank lines. A line that is not valid UTF-8 raises FormatError naming the file and
    line (and the byte offset in the line), or with a "skip" counter is counted and skipped."""
    source = os.fspath(path)
    with _open(path) as handle:
        line = 0
        try:
            for line, raw in enumerate(handle, 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    err = FormatError(
                        source,
                        None,
                        None,
                        "UTF-8 text",
                        f"byte {raw[exc.start : exc.start + 1]!r} at offset {exc.start} ({exc.reason})",
                        line=line,
                        reason="invalid UTF-8",
                    )
                    if counter is None:
                        raise err from None
                    counter.handle(err)
                    continue
                if line == 1:
                    text = text.lstrip("\ufeff")
                text = text.strip()
                if text:
                    yield text
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            # A damaged .gz cannot be resynchronised: in skip mode the rest of the file is lost, counted once.
            err = FormatError(
                source,
                None,
                None,
                line=line + 1,
                message=f"damaged gzip stream, rest of the file unreadable: {exc}",
                reason="damaged gzip",
            )
            if counter is None:
                raise err from None
            counter.handle(err)


def read_text_corpus(path: str | os.PathLike, counter: SkipCounter | None = None) -> list[str]:
    return list(iter_text_corpus(path, counter))
