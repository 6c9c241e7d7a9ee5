"""Generated directories appear whole or not at all (data/synth/directories.py), which every synthetic dataset's
cache relies on when several test workers or ranks ask for it at once."""

import pytest

from vlbert_fast.data.synth.directories import cached_directory, write_new_directory


def test_written_whole_refused_when_present_and_nothing_left_by_a_failure(tmp_path):
    out = write_new_directory(tmp_path / "d", "data", lambda root: (root / "a.txt").write_text("a"))
    assert (out / "a.txt").read_text() == "a"
    with pytest.raises(FileExistsError, match="d exists; data is written into a new directory only"):
        write_new_directory(out, "data", lambda root: None)

    def fail(root):
        (root / "half.txt").write_text("half")
        raise ValueError("disk full")

    with pytest.raises(ValueError, match="disk full"):
        write_new_directory(tmp_path / "e", "data", fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no "e", no temporary directory


def test_cached_directory_writes_once_and_takes_a_finished_racers_copy(tmp_path):
    calls = []

    def write(root):
        calls.append(root)
        (root / "done.json").write_text("mine")

    path = tmp_path / "cache"
    assert cached_directory(path, "done.json", "data", write) == path
    assert cached_directory(path, "done.json", "data", write) == path and len(calls) == 1

    def lose_the_race(root):  # another process renames its finished copy into place while this one writes
        (root / "done.json").write_text("mine")
        (tmp_path / "raced").mkdir()
        (tmp_path / "raced" / "done.json").write_text("theirs")

    raced = tmp_path / "raced"
    assert cached_directory(raced, "done.json", "data", lose_the_race) == raced
    assert (raced / "done.json").read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "raced"]

    def unfinished_racer(root):  # a directory without the marker is not a finished copy: the error stands
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "partial.txt").write_text("?")

    with pytest.raises(OSError):
        cached_directory(tmp_path / "bad", "done.json", "data", unfinished_racer)
