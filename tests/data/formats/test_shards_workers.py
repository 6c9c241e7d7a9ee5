"""FeatureShards in DataLoader workers: after a fork each worker maps the files itself; after pickling (spawned
workers) the object carries no maps, only the index."""

import os
import pickle

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vlbert_fast.data.formats import FeatureShards, convert_to_shards

from .helpers import assert_same, make_record


class RegionsDataset(Dataset):
    def __init__(self, shards: FeatureShards):
        self.shards = shards

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, i: int):
        image_id = self.shards.image_ids[i]
        record = self.shards[image_id]
        # The pid the object's maps belong to, read after the access: it must be this worker's own.
        return os.getpid(), self.shards._pid, image_id, record.features, record.boxes


def write_shards(path, n: int = 6):
    rng = np.random.default_rng(0)
    records = [make_record(rng, f"im{i}", 1 + i % 4, dim=5, classes=3) for i in range(n)]
    convert_to_shards(records, path, shard_size=4, dtype="float32")
    return records


def test_forked_dataloader_workers_map_the_shards_themselves(tmp_path):
    records = write_shards(tmp_path)
    shards = FeatureShards(tmp_path)
    assert_same(shards["im0"], records[0])  # the parent maps a shard before forking
    loader = DataLoader(
        RegionsDataset(shards), batch_size=None, num_workers=2, multiprocessing_context="fork", shuffle=False
    )
    seen = list(loader)
    assert [item[2] for item in seen] == [r.image_id for r in records]
    pids = {item[0] for item in seen}
    assert len(pids) == 2 and os.getpid() not in pids
    assert all(worker_pid == maps_pid for worker_pid, maps_pid, *_ in seen)
    for (_, _, _, features, boxes), record in zip(seen, records, strict=True):
        torch.testing.assert_close(features, torch.from_numpy(record.features), atol=0, rtol=0)
        torch.testing.assert_close(boxes, torch.from_numpy(record.boxes), atol=0, rtol=0)
    assert_same(shards["im5"], records[5])  # the parent's own maps still serve it


def test_pickle_carries_the_description_not_the_maps_nor_the_ids(tmp_path):
    records = write_shards(tmp_path / "small")
    shards = FeatureShards(tmp_path / "small")
    assert_same(shards["im3"], records[3])
    assert "im3" in shards and shards._index is not None and list(shards._open) == [0]
    blob = pickle.dumps(shards)
    copy = pickle.loads(blob)
    assert copy._index is None and not copy._open  # nothing mapped until the copy reads
    for record in records:
        assert_same(copy[record.image_id], record)
    rng = np.random.default_rng(1)
    many = [make_record(rng, f"a much longer image id number {i}", 1, dim=5, classes=3) for i in range(3000)]
    convert_to_shards(many, tmp_path / "large", shard_size=4096, dtype="float32")
    large = pickle.dumps(FeatureShards(tmp_path / "large"))
    assert len(blob) < 4096 and abs(len(large) - len(blob)) < 200  # O(1) in the records: no ids, no arrays
