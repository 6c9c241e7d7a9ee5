"""`archive.zip@/member` specs: stored and deflated members, plain paths, clear errors, one cache per process."""

import multiprocessing
import os
import zipfile

import pytest

from vlbert_fast.data.formats import FormatError, close_archives, path_exists, read_bytes, resolve_path
from vlbert_fast.data.formats import paths as paths_module


def make_zip(path, members: dict[str, bytes], compression: int) -> None:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def test_resolve_splits_at_the_first_zip_mark(tmp_path):
    where = resolve_path("train_frcnn.0.zip@/train_frcnn/0001.json", tmp_path)
    assert where.file == tmp_path / "train_frcnn.0.zip" and where.member == "train_frcnn/0001.json"
    plain = resolve_path("images/a.jpg", tmp_path)
    assert plain.file == tmp_path / "images/a.jpg" and not plain.in_archive
    with pytest.raises(FormatError, match="no member after '@'"):
        resolve_path("x.zip@/", tmp_path)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_reads_members_of_stored_and_deflated_archives(tmp_path, compression):
    members = {"images/a.jpg": b"\xff\xd8jpeg bytes" * 50, "frcnn/a.json": b'{"image_id": "a"}'}
    make_zip(tmp_path / "cc.zip", members, compression)
    with zipfile.ZipFile(tmp_path / "cc.zip") as zf:
        assert {i.compress_type for i in zf.infolist()} == {compression}
    for name, data in members.items():
        assert read_bytes(f"cc.zip@/{name}", tmp_path) == data
        assert read_bytes(f"cc.zip@{name}", str(tmp_path)) == data  # leading slash optional
        assert path_exists(f"cc.zip@/{name}", tmp_path)
    assert not path_exists("cc.zip@/images/b.jpg", tmp_path)
    close_archives()


def test_plain_paths_and_every_missing_thing_names_spec_and_root(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/x.json").write_bytes(b"{}")
    assert read_bytes("sub/x.json", tmp_path) == b"{}" and path_exists("sub/x.json", tmp_path)
    make_zip(tmp_path / "a.zip", {"m.json": b"1"}, zipfile.ZIP_STORED)
    (tmp_path / "fake.zip").write_bytes(b"this is not a zip archive")
    cases = {
        "sub/y.json": ("sub/y.json: file '{root}/sub/y.json' does not exist (root {root})", "missing file"),
        "b.zip@/m.json": ("b.zip@/m.json: archive '{root}/b.zip' does not exist (root {root})", "missing archive"),
        "a.zip@/n.json": (
            "a.zip@/n.json: no member 'n.json' in archive '{root}/a.zip' (root {root})",
            "missing member",
        ),
        "fake.zip@/m.json": ("fake.zip@/m.json: '{root}/fake.zip' is not a readable zip archive", "not a zip"),
    }
    for spec, (message, reason) in cases.items():
        with pytest.raises(FormatError) as info:
            read_bytes(spec, tmp_path)
        assert str(info.value).startswith(message.format(root=tmp_path)), str(info.value)
        assert info.value.reason == reason  # what a SkipCounter counts by
    assert not path_exists("fake.zip@/m.json", tmp_path) and not path_exists("b.zip@/m.json", tmp_path)
    close_archives()


def _child_reads(spec, root, queue) -> None:
    before = dict(paths_module._archives().archives)  # the cache this process sees before reading
    data = read_bytes(spec, root)
    queue.put((len(before), data, len(paths_module._archives().archives)))


def test_a_forked_process_opens_its_own_archive_handles(tmp_path):
    make_zip(tmp_path / "z.zip", {"m": b"member bytes"}, zipfile.ZIP_DEFLATED)
    assert read_bytes("z.zip@/m", tmp_path) == b"member bytes"
    assert len(paths_module._archives().archives) == 1  # the parent has it open, cached
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_reads, args=("z.zip@/m", tmp_path, queue))
    child.start()
    seen_before, data, open_after = queue.get(timeout=30)
    child.join(timeout=30)
    assert child.exitcode == 0
    assert (seen_before, data, open_after) == (0, b"member bytes", 1)  # inherited handles not used, own one opened
    assert read_bytes("z.zip@/m", tmp_path) == b"member bytes"  # the parent's handle still works
    close_archives()


def test_write_atomic_replaces_the_whole_file_durably(tmp_path, monkeypatch):
    target = tmp_path / "index.json"
    target.write_text("old")
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        calls.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    paths_module.write_atomic(target, "new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["index.json"]
    # the data reaches the disk before the rename, and the rename before the call returns
    assert [what for what, _ in calls] == ["fsync", "replace", "fsync"]
    assert calls[0][1].startswith(str(tmp_path / ".index.json.tmp")) and calls[2][1] == str(tmp_path)

    def killed(src, dst):
        raise OSError("killed before the rename")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(OSError, match="killed"):
        paths_module.write_atomic(target, "newer")
    assert target.read_text() == "new"  # never torn: the old file or the new one
