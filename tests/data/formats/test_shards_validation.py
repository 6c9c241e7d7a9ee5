"""Bad shards (issue 15): every case names the file, the record and the image id. Values are checked when a record
is read (both modes raise: the loader skips and counts in skip mode); the files, sizes and ids are checked once when
the directory is opened, with the result cached: strict mode refuses the directory, skip mode opens it and each
unusable record raises when read, counted once however often it is read; a broken index is refused in both."""

import json
import shutil

import numpy as np
import pytest

from vlbert_fast.data.formats import FeatureShards, FormatError, SkipCounter, convert_to_shards
from vlbert_fast.data.formats.npy_files import write_npy
from vlbert_fast.data.formats.shard_ids import hash_ids, sorted_hash_index

from .helpers import make_record

BOXES = [3, 1, 5, 2, 4, 2, 3]  # img0..img6, in shards of 3: [img0 img1 img2] [img3 img4 img5] [img6]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    rng = np.random.default_rng(0)
    records = [make_record(rng, f"img{i}", n, dim=6, classes=5) for i, n in enumerate(BOXES)]
    for record in records:
        record.image_box_feature = rng.normal(size=6).astype(np.float32)
    path = tmp_path_factory.mktemp("shards") / "good"
    convert_to_shards(records, path, shard_size=3, max_boxes=5, dtype="float32")
    return path


def rows(path, record: int) -> slice:
    """The rows of a record's boxes in its shard's files."""
    offsets = np.load(path / "index.box_offsets.npy")
    base = offsets[(record // 3) * 3]
    return slice(int(offsets[record] - base), int(offsets[record + 1] - base))


def edit(path, name: str, change) -> None:
    array = np.load(path / name)
    change(array)
    write_npy(path / name, array)


def set_value(field: str, record: int, box: int, column: int, value: float):
    def corrupt(path):
        per_box = field != "image_box_feature"
        edit(
            path,
            f"shard-{record // 3:05d}.{field}.npy",
            lambda a: a.__setitem__((rows(path, record).start + box if per_box else record % 3, column), value),
        )

    return corrupt


def write_ids(path, ids: list[str]) -> None:
    """Replaces the stored ids and rebuilds their lookup consistently (a foreign tool merging two conversions)."""
    raw = [i.encode() for i in ids]
    offsets = np.zeros(len(ids) + 1, np.int64)
    np.cumsum([len(r) for r in raw], out=offsets[1:])
    ids_T = np.frombuffer(b"".join(raw), np.uint8)
    id_hash, id_order, id_fence = sorted_hash_index(hash_ids(ids_T, offsets))
    for name, array in [("ids", ids_T), ("id_offsets", offsets), ("id_hash", id_hash), ("id_order", id_order)]:
        write_npy(path / f"index.{name}.npy", array)
    write_npy(path / "index.id_fence.npy", id_fence)


def set_index_json(**change):
    def corrupt(path):
        index = json.loads((path / "index.json").read_text())
        (path / "index.json").write_text(json.dumps({**index, **change}))

    return corrupt


def truncate(name: str, by: int = 10):
    def corrupt(path):
        (path / name).write_bytes((path / name).read_bytes()[:-by])

    return corrupt


def other_rows(name: str, dim: int | None = None, drop: int = 0):
    """A readable .npy file of another width or with fewer rows than the index says."""

    def corrupt(path):
        array = np.load(path / name)
        write_npy(path / name, np.zeros((array.shape[0] - drop, dim or array.shape[1]), array.dtype))

    return corrupt


def swap_box(record: int, box: int, column_pair: tuple[int, int], equal: bool = False):
    def change(a):
        r = rows_of[0].start + box
        i, j = column_pair
        a[r, j] = a[r, i] if equal else a[r, i] - 1.0

    def corrupt(path):
        rows_of[:] = [rows(path, record)]
        edit(path, f"shard-{record // 3:05d}.boxes.npy", change)

    rows_of: list[slice] = []
    return corrupt


# read-time cases: (name, corrupt, record, message after "<dir>/")
ON_READ = [
    ("nan feature", set_value("features", 4, 2, 3, np.nan), 4,
     "shard-00001.features.npy, record 4 (image_id 'img4'), field 'features': expected finite values, found nan at "
     "index (2, 3)"),
    ("inf box", set_value("boxes", 0, 1, 2, np.inf), 0,
     "shard-00000.boxes.npy, record 0 (image_id 'img0'), field 'boxes': expected finite values, found inf at index "
     "(1, 2)"),
    ("nan soft label", set_value("classes", 6, 0, 4, np.nan), 6,
     "shard-00002.classes.npy, record 6 (image_id 'img6'), field 'classes': expected finite values, found nan at "
     "index (0, 4)"),
    ("inf whole-image feature", set_value("image_box_feature", 5, 0, 1, -np.inf), 5,
     "shard-00001.image_box_feature.npy, record 5 (image_id 'img5'), field 'image_box_feature': expected finite "
     "values, found -inf at index (1,)"),
    ("reversed box", swap_box(2, 4, (0, 2)), 2,
     "shard-00000.boxes.npy, record 2 (image_id 'img2'), field 'boxes': expected x2 >= x1 and y2 >= y1, found box 4"),
    ("zero-area box", swap_box(3, 1, (1, 3), equal=True), 3,
     "shard-00001.boxes.npy, record 3 (image_id 'img3'), field 'boxes': expected x2 > x1 and y2 > y1 (a box with "
     "area), found box 1"),
]  # fmt: skip

# open-time cases: (name, corrupt, unusable records, message of the first after "<dir>/")
ON_OPEN = [
    ("zero image width", lambda p: edit(p, "index.image_wh.npy", lambda a: a.__setitem__((2, 0), 0)), [2],
     "index.image_wh.npy, record 2 (image_id 'img2'), field 'image_wh': expected a positive (W, H), found [0, 48]"),
    ("negative image height", lambda p: edit(p, "index.image_wh.npy", lambda a: a.__setitem__((6, 1), -48)), [6],
     "index.image_wh.npy, record 6 (image_id 'img6'), field 'image_wh': expected a positive (W, H), found [64, -48]"),
    ("feature width", other_rows("shard-00001.features.npy", dim=7), [3, 4, 5],
     "shard-00001.features.npy, record 3 (image_id 'img3'): expected float32 [8, 6] as index.json implies, found "
     "float32 [8, 7]; the record's shard is unusable"),
    ("soft-label width", other_rows("shard-00002.classes.npy", dim=4), [6],
     "shard-00002.classes.npy, record 6 (image_id 'img6'): expected float32 [3, 5] as index.json implies, found "
     "float32 [3, 4]; the record's shard is unusable"),
    ("truncated shard file", truncate("shard-00000.boxes.npy"), [0, 1, 2],
     "shard-00000.boxes.npy, record 0 (image_id 'img0'): expected 272 bytes (float32 [9, 4]), found 262 bytes on "
     "disk (truncated); the record's shard is unusable"),
    ("shard with fewer rows than the index", other_rows("shard-00001.boxes.npy", drop=1), [3, 4, 5],
     "shard-00001.boxes.npy, record 3 (image_id 'img3'): expected float32 [8, 4] as index.json implies, found "
     "float32 [7, 4]; the record's shard is unusable"),
    ("missing shard file", lambda p: (p / "shard-00002.image_box_feature.npy").unlink(), [6],
     "shard-00002.image_box_feature.npy, record 6 (image_id 'img6'): missing; the record's shard is unusable"),
    ("duplicate image id", lambda p: write_ids(p, ["img0", "img1", "img2", "img3", "img4", "img1", "img6"]), [1, 5],
     "index.ids.npy, record 1 (image_id 'img1'), field 'image_id': expected unique ids, found the id of record 5 "
     "too"),
    ("more boxes than max_boxes", set_index_json(max_boxes=4), [2],
     "index.box_offsets.npy, record 2 (image_id 'img2'), field 'num_boxes': expected at most 4 (max_boxes), found 5 "
     "boxes"),
]  # fmt: skip

# fatal cases: the index cannot find records; refused in both modes
FATAL = [
    ("truncated index file", truncate("index.image_wh.npy", 8),
     "index.image_wh.npy: expected 184 bytes (int32 [7, 2]), found 176 bytes on disk (truncated)"),
    ("box offsets going back", lambda p: edit(p, "index.box_offsets.npy", lambda a: a.__setitem__(3, 2)),
     "index.box_offsets.npy: box offsets go back at record 2; the index does not describe the shards"),
    ("ids changed without their hashes",
     lambda p: write_npy(p / "index.ids.npy", np.frombuffer(b"img0img1img2img3img4img1img6", np.uint8)),
     "index.id_hash.npy: the id hashes are not those of the stored ids; the index does not describe the shards"),
    ("index.json counts", set_index_json(num_boxes=21),
     "index.box_offsets.npy: box offsets run from 0 to 20, expected 0 to 21; the index does not describe the shards"),
    ("index.json record count", set_index_json(num_records=6, num_shards=2),
     "index.box_offsets.npy: expected int64 [7] as index.json implies, found int64 [8]"),
]  # fmt: skip


def damaged(good, tmp_path, corrupt):
    path = tmp_path / "shards"
    shutil.copytree(good, path)
    (path / "index.checked.json").unlink(missing_ok=True)
    corrupt(path)
    return path


def read_all(shards, times: int = 2) -> set:
    """(file, record) of every record that raised, over `times` passes; the others must read."""
    failed = set()
    for _ in range(times):
        for i in range(len(shards)):
            try:
                shards.record_at(i)
            except FormatError as err:
                assert err.record == (i, shards.image_ids[i]), str(err)
                failed.add((err.file, err.record))
    return failed


@pytest.mark.parametrize("name, corrupt, record, message", ON_READ, ids=[c[0] for c in ON_READ])
def test_bad_values_raise_when_read_in_both_modes(good, tmp_path, name, corrupt, record, message):
    path = damaged(good, tmp_path, corrupt)
    for mode in ("raise", "skip"):
        shards = FeatureShards(path, on_bad_record=mode)  # the files are sound: it opens
        with pytest.raises(FormatError) as info:
            shards[f"img{record}"]
        assert str(info.value).startswith(f"{path}/{message}")
        assert {r for _, (r, _) in read_all(shards)} == {record}


@pytest.mark.parametrize("name, corrupt, records, message", ON_OPEN, ids=[c[0] for c in ON_OPEN])
def test_bad_files_refuse_strict_mode_and_are_skipped_record_by_record(good, tmp_path, name, corrupt, records, message):
    path = damaged(good, tmp_path, corrupt)
    with pytest.raises(FormatError) as info:
        FeatureShards(path)
    assert str(info.value) == f"{path}/{message}"
    shards = FeatureShards(path, on_bad_record="skip")
    assert shards.unusable_records == len(records)
    counter = SkipCounter("skip")
    failed = read_all(shards)
    for file, record in sorted(failed):
        counter.handle(FormatError(file, record, message="unusable"))
    assert sorted(r for _, (r, _) in failed) == records  # each once, however often it was read
    assert counter.total == len(records)


@pytest.mark.parametrize("name, corrupt, message", FATAL, ids=[c[0] for c in FATAL])
def test_a_broken_index_is_refused_in_both_modes(good, tmp_path, name, corrupt, message):
    path = damaged(good, tmp_path, corrupt)
    for mode in ("raise", "skip"):
        with pytest.raises(FormatError) as info:
            FeatureShards(path, on_bad_record=mode)
        assert str(info.value).startswith(f"{path}/{message}")


def test_the_checks_run_once_and_again_when_a_file_changes(good, tmp_path, monkeypatch):
    from vlbert_fast.data.formats import shard_checks

    path = damaged(good, tmp_path, lambda p: None)
    scans = []
    original = shard_checks._scan_index
    monkeypatch.setattr(shard_checks, "_scan_index", lambda *a: scans.append(1) or original(*a))
    for _ in range(3):
        FeatureShards(path)
    assert len(scans) == 1 and (path / "index.checked.json").is_file()
    edit(path, "index.image_wh.npy", lambda a: a.__setitem__((0, 0), 0))
    with pytest.raises(FormatError, match="record 0 .image_id 'img0'., field 'image_wh'"):
        FeatureShards(path)
    assert len(scans) == 2


def test_a_shard_file_changed_after_the_checks_is_caught_when_mapped(good, tmp_path):
    path = damaged(good, tmp_path, lambda p: None)
    FeatureShards(path)  # checked and cached
    truncate("shard-00001.features.npy")(path)  # in place: the directory's listing does not change
    shards = FeatureShards(path)  # the cached checks: opens
    assert shards["img0"].num_boxes == 3
    with pytest.raises(FormatError) as info:
        shards["img4"]
    assert str(info.value) == (
        f"{path}/shard-00001.features.npy, record 4 (image_id 'img4'): expected 320 bytes (float32 [8, 6]), found "
        "310 bytes on disk (truncated); the record's shard is unusable"
    )


def test_a_read_only_directory_keeps_its_checks_in_the_cache_directory(good, tmp_path, monkeypatch):
    path = damaged(good, tmp_path, lambda p: None)
    monkeypatch.setenv("VLBERT_FAST_CACHE", str(tmp_path / "cache"))
    path.chmod(0o555)
    try:
        FeatureShards(path)
        writable = (path / "index.checked.json").exists()
    finally:
        path.chmod(0o755)
    assert writable or len(list((tmp_path / "cache/shard_checks").glob("*.json"))) == 1


def test_the_pretraining_loader_refuses_or_skips_the_unusable_records(small_world, tmp_path):
    from vlbert_fast.config import RunConfig, load_config
    from vlbert_fast.data.caption_dataset import Skipped
    from vlbert_fast.data.pretrain_loader import build_pretrain_data

    world = tmp_path / "world"
    shutil.copytree(small_world, world)
    (world / "features/index.checked.json").unlink(missing_ok=True)
    edit(world / "features", "index.image_wh.npy", lambda a: a.__setitem__((3, 1), 0))
    bad_id = FeatureShards(world / "features", on_bad_record="skip").image_ids[3]
    overrides = [f"data.root={world}", "data.num_workers=0", "train.micro_batch_size=4", "train.global_batch_size=4"]
    with pytest.raises(FormatError, match=f"record 3 .image_id '{bad_id}'., field 'image_wh': expected a positive"):
        build_pretrain_data(load_config(RunConfig, overrides=overrides))
    data = build_pretrain_data(load_config(RunConfig, overrides=[*overrides, "data.on_bad_record=skip"]))
    items = [data.captions[i] for i in range(len(data.captions))]
    skipped = [i for i, item in enumerate(items) if isinstance(item, Skipped)]
    assert [data.captions.records[i].image for i in skipped] == [f"images.zip@/{bad_id}.png"]
    assert "index.image_wh.npy, record 3" in str(items[skipped[0]].error)
