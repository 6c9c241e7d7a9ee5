"""The bad-input matrix: one `Case` per malformed input, checked the same way everywhere.

Strict mode: reading raises the case's error, and its message names the file and holds every `expect` fragment (the
record or line, the field, what was expected and what was found). Skip mode (where the input has one): the bad record
is counted once (and named in the counter's report) and the good records around it are still read. Inputs without a
skip mode (a vocabulary, a config, the tasks' annotation files, whose records cannot be dropped without changing the
official metric) assert the strict message only, and say so with `skip_good=None`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vlbert_fast.data.formats import FormatError, SkipCounter


@dataclass
class Case:
    id: str
    make: Callable[[Path, Path], Path]
    """make(directory, world) writes the bad input under `directory` (the small synthetic world at hand for good
    records); returns the file the message must name."""
    read: Callable[[Path, SkipCounter | None], list]
    """Reads it (None: strict); returns the records read."""
    expect: list[str]
    """Fragments of the strict message besides the file's name."""
    error: type[Exception] = FormatError
    skip_good: int | None = 2
    """Records still read in skip mode (None: this input has no skip mode)."""
    named: Callable[[Path], str] | None = field(default=None)
    """The name the message uses for the file, when not str(path) (e.g. an archive member spec)."""


def check_strict(case: Case, tmp_path: Path, world: Path) -> str:
    path = case.make(tmp_path, world)
    with pytest.raises(case.error) as info:
        case.read(path, None)
    message = str(info.value)
    name = case.named(path) if case.named else str(path)
    assert name in message, message
    for fragment in case.expect:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def check_skip(case: Case, tmp_path: Path, world: Path) -> None:
    assert case.skip_good is not None, f"{case.id} has no skip mode"
    path = case.make(tmp_path, world)
    counter = SkipCounter("skip")
    records = case.read(path, counter)
    assert counter.total == 1, counter.report()
    assert len(records) == case.skip_good, records
    name = case.named(path) if case.named else str(path)
    assert name in counter.report(), counter.report()
    assert all(fragment in counter.examples[0] for fragment in case.expect), counter.examples


def strict_params(cases: list[Case]) -> list:
    return [pytest.param(c, id=c.id) for c in cases]


def skip_params(cases: list[Case]) -> list:
    return [pytest.param(c, id=c.id) for c in cases if c.skip_good is not None]
