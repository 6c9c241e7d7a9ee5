"""The binary id index of the shards: FNV-1a 64 as published, the vectorised hash equal to the scalar one, lookups
through the fence and the sorted hashes for every id (across block edges, unicode, misses), hash collisions
resolved by the stored ids, and nothing read when a directory is opened."""

import numpy as np

from vlbert_fast.data.formats import FeatureShards, convert_to_shards
from vlbert_fast.data.formats.shard_ids import FENCE_STRIDE, IdLookup, hash_ids, id_hash, sorted_hash_index

from .helpers import make_record


def packed(ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    raw = [i.encode("utf-8") for i in ids]
    offsets = np.zeros(len(raw) + 1, np.int64)
    np.cumsum([len(r) for r in raw], out=offsets[1:])
    return np.frombuffer(b"".join(raw), np.uint8), offsets


def test_fnv1a_64_test_vectors():
    # from the reference test suite of Fowler/Noll/Vo (test_fnv.c, FNV-1a 64-bit)
    assert id_hash("") == 0xCBF29CE484222325
    assert id_hash("a") == 0xAF63DC4C8601EC8C
    assert id_hash("foobar") == 0x85944171F73967E8


def test_vectorised_hash_equals_the_scalar_one():
    rng = np.random.default_rng(0)
    alphabet = list("abcXYZ0189_/.@-") + ["é", "图", "🙂"]
    ids = ["".join(rng.choice(alphabet, size=int(n))) for n in rng.integers(1, 40, size=500)]
    ids += ["x" * 70, "frcnn.zip@/000001.json"]
    ids_T, offsets = packed(ids)
    np.testing.assert_array_equal(hash_ids(ids_T, offsets), np.array([id_hash(i) for i in ids], np.uint64))


def test_every_id_is_found_across_fence_blocks_and_misses_are_none():
    ids = [f"cc/{i * 7919 % 100003:06d}.jpg" for i in range(3 * FENCE_STRIDE + 17)] + ["图像 1", "🙂"]
    ids_T, offsets = packed(ids)
    lookup = IdLookup(ids_T, offsets, *sorted_hash_index(hash_ids(ids_T, offsets)))
    assert len(lookup.fence) == 4
    for i, image_id in enumerate(ids):
        assert lookup.find(image_id) == i and lookup.id_at(i) == image_id
    for missing in ("cc/000000.jpeg", "", "图像", "cc/"):
        assert lookup.find(missing) is None


def test_a_hash_collision_is_resolved_by_the_stored_id():
    ids = ["alpha", "beta", "gamma"]
    ids_T, offsets = packed(ids)
    hashes = hash_ids(ids_T, offsets)
    hashes[2] = hashes[0]  # "gamma" now shares "alpha"'s hash, as a colliding id would
    lookup = IdLookup(ids_T, offsets, *sorted_hash_index(hashes))
    assert lookup.find("alpha") == 0 and lookup.find("beta") == 1
    assert lookup.find("gamma") is None  # searched under its own hash: not there; never mistaken for "alpha"
    ids_T, offsets = packed(["alpha", "beta", "alpha"])
    lookup = IdLookup(ids_T, offsets, *sorted_hash_index(hash_ids(ids_T, offsets)))
    assert lookup.find("alpha") == 0  # a duplicate (the checks reject it): the first record in storage order


def test_opening_reads_no_array_and_lookups_map_only_the_index(tmp_path):
    rng = np.random.default_rng(0)
    records = [make_record(rng, f"img{i}", 1 + i % 3, dim=4, classes=None) for i in range(1500)]
    convert_to_shards(records, tmp_path, shard_size=100, dtype="float32")
    shards = FeatureShards(tmp_path)
    assert shards._index is None and not shards._open  # opening read index.json and the cached checks only
    assert "img1234" in shards and "img1500" not in shards and 1234 not in shards
    assert not shards._open  # a lookup maps the index, not the shards
    np.testing.assert_array_equal(shards["img1234"].features, records[1234].features)
    assert list(shards._open) == [12]
    assert shards.image_ids[-1] == "img1499" and shards.image_ids[2:4] == ["img2", "img3"]
