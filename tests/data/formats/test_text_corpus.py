"""The text corpus: one unit per line, blanks skipped, bad UTF-8 raised with its line or skipped and counted."""

import gzip

import pytest

from vlbert_fast.data.formats import FormatError, SkipCounter, read_text_corpus


def test_lines_are_stripped_and_blank_lines_skipped(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes("\ufeffFirst sentence.\r\n\n   \n  Second one, naïve.  \nthird".encode())
    counter = SkipCounter("skip")
    assert read_text_corpus(path, counter) == ["First sentence.", "Second one, naïve.", "third"]
    assert counter.total == 0  # blank lines are not errors


def test_gzip_corpus(tmp_path):
    with gzip.open(tmp_path / "c.txt.gz", "wb") as f:
        f.write(b"a b\n\nc d\n")
    assert read_text_corpus(tmp_path / "c.txt.gz") == ["a b", "c d"]
    (tmp_path / "cut.txt.gz").write_bytes((tmp_path / "c.txt.gz").read_bytes()[:-6])
    with pytest.raises(FormatError, match="cut.txt.gz, line 4: damaged gzip stream, rest of the file unreadable"):
        read_text_corpus(tmp_path / "cut.txt.gz")
    counter = SkipCounter("skip")  # the lines before the damage load; the damage is counted once
    assert read_text_corpus(tmp_path / "cut.txt.gz", counter) == ["a b", "c d"]
    assert counter.by_reason() == {(str(tmp_path / "cut.txt.gz"), "damaged gzip"): 1}


def test_bad_utf8_raises_with_line_or_is_skipped_and_counted(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good one\nbad \xff byte\ngood two\n")
    with pytest.raises(FormatError) as info:
        read_text_corpus(path)
    assert str(info.value) == (
        f"{path}, line 2: expected UTF-8 text, found byte b'\\xff' at offset 4 (invalid start byte)"
    )
    counter = SkipCounter("skip")
    assert read_text_corpus(path, counter) == ["good one", "good two"]
    assert counter.by_reason() == {(str(path), "invalid UTF-8"): 1}
