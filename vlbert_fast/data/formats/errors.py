"""Errors a user can act on, and the counter that makes skipping bad records visible instead of silent.

Every reader in this package raises `FormatError` for a malformed record: it names the file, the record (index,
image_id or line), the field, what was expected and what was found. A reader given a `SkipCounter` in "skip" mode
hands the error to the counter instead, which counts it by (file, reason) and keeps the first few messages, and
moves on to the next record; the trainer prints `counter.report()` at the end of an epoch. A counter counts distinct
records (`FormatError.record_key`): a bad record met again (the next epoch, another worker) is not counted twice.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Literal

_UNSET = object()


def _describe_record(record: object, line: int | None) -> str:
    if record is None:
        return f"line {line}" if line is not None else ""
    if isinstance(record, tuple) and len(record) == 2:  # (index, image_id): a record of a file keyed by image id
        text = f"record {record[0]} (image_id {str(record[1])!r})"
    else:
        text = f"record {record}" if isinstance(record, int) else f"record {str(record)!r}"
    return f"{text} (line {line})" if line is not None else text


class FormatError(ValueError):
    """A malformed record in a data file.

    Two forms:
    - `FormatError(file, record, field, expected, found)`: str() reads
      "data/cc.jsonl, record 17 (line 18), field 'boxes': expected 36 float32 values (9 x 4), found 35.5 ...";
    - `FormatError(message)` or `FormatError(file, record, message=..., line=...)` for errors that are not about one
      field ("data/cc.jsonl, line 5: invalid JSON: ...").

    `record` is an index (int), an image_id, an (index, image_id) pair ("record 17 (image_id '42')"), or None when
    only the line is known (`line=`). `reason` is the short
    key a `SkipCounter` counts by; by default the field name, or the message's first words.
    """

    def __init__(
        self,
        file: str | os.PathLike | None = None,
        record: object = None,
        field: str | None = None,
        expected: object = None,
        found: object = None,
        *,
        line: int | None = None,
        message: str | None = None,
        reason: str | None = None,
    ):
        only_message = record is None and field is None and expected is None and found is None and line is None
        if message is None and only_message and file is not None:
            message, file = str(file), None
        self.file = None if file is None else os.fspath(file)
        self.record = record
        self.field = field
        self.expected = expected
        self.found = found
        self.line = line
        self.message = message
        if reason is None:
            if field is not None:
                reason = f"field '{field}'"
            else:
                reason = " ".join((message or "malformed record").split(":")[0].split()[:4])
        self.reason = reason
        super().__init__(self._render())

    def _render(self) -> str:
        head = [part for part in (self.file, _describe_record(self.record, self.line)) if part]
        if self.field is not None:
            head.append(f"field '{self.field}'")
        detail = []
        if self.expected is not None:
            detail.append(f"expected {self.expected}")
        if self.found is not None:
            detail.append(f"found {self.found}")
        tail = [part for part in (", ".join(detail), self.message) if part]
        return ": ".join(part for part in (", ".join(head), "; ".join(tail)) if part)

    def record_key(self) -> tuple:
        """What identifies the bad record: its file with its record and/or line, or the whole message when it names
        neither."""
        if self.record is None and self.line is None:
            return (self.file, str(self))
        return (self.file, str(self.record), self.line)

    def at(self, *, record: object = _UNSET, line: int | None = None) -> FormatError:
        """A copy located at another record and/or line (readers add the line to errors raised deeper down)."""
        return FormatError(
            self.file,
            self.record if record is _UNSET else record,
            self.field,
            self.expected,
            self.found,
            line=self.line if line is None else line,
            message=self.message,
            reason=self.reason,
        )

    def __reduce__(self):
        # Exceptions pickle as cls(*args); keep the structured fields across processes (DataLoader workers).
        kwargs = {"line": self.line, "message": self.message, "reason": self.reason}
        return (_rebuild_format_error, ((self.file, self.record, self.field, self.expected, self.found), kwargs))


def _rebuild_format_error(args: tuple, kwargs: dict) -> FormatError:
    return FormatError(*args, **kwargs)


class SkipCounter:
    """What to do with a malformed record: raise it, or skip it and count it (never silently).

    `handle(err)` raises `err` when `on_error == "raise"`; otherwise it counts the error by (file, reason) and keeps
    the first `max_examples` messages for `report()`. Each DataLoader worker has its own copy (it pickles); the
    trainer combines them with `merge`.
    """

    def __init__(self, on_error: Literal["raise", "skip"] = "raise", *, max_examples: int = 5):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"SkipCounter: on_error must be 'raise' or 'skip', got {on_error!r}")
        if max_examples < 0:
            raise ValueError(f"SkipCounter: max_examples must be >= 0, got {max_examples}")
        self.on_error = on_error
        self.max_examples = max_examples
        self._counts: Counter[tuple[str, str]] = Counter()
        self._seen: dict[tuple, tuple[str, str]] = {}
        self.examples: list[str] = []

    def handle(self, err: FormatError) -> None:
        if self.on_error == "raise":
            raise err
        key = err.record_key()
        if key in self._seen:
            return
        self._seen[key] = (err.file or "<unknown file>", err.reason)
        self._counts[self._seen[key]] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(str(err))

    @property
    def total(self) -> int:
        return sum(self._counts.values())

    def by_reason(self) -> dict[tuple[str, str], int]:
        """Skipped records per (file, reason), most frequent first."""
        return dict(self._counts.most_common())

    def merge(self, other: SkipCounter) -> SkipCounter:
        """Adds another counter's records not counted here yet, and its examples (e.g. from another DataLoader worker
        or rank); returns self."""
        for key, where in other._seen.items():
            if key not in self._seen:
                self._seen[key] = where
                self._counts[where] += 1
        room = self.max_examples - len(self.examples)
        self.examples.extend([e for e in other.examples if e not in self.examples][: max(room, 0)])
        return self

    def report(self) -> str:
        if not self._counts:
            return "skipped 0 malformed records"
        lines = [f"skipped {self.total} malformed record{'s' if self.total != 1 else ''}:"]
        lines += [f"  {count:>8}  {file}: {reason}" for (file, reason), count in self._counts.most_common()]
        if self.examples:
            lines.append(f"first {len(self.examples)}:")
            lines += [f"  {message}" for message in self.examples]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"SkipCounter(on_error={self.on_error!r}, total={self.total})"
