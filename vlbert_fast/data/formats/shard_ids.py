"""The image-id index of the feature shards: ids stored back to back, found through a sorted array of their hashes,
all memory-mapped, so opening costs O(1) memory per process whatever the number of images (no Python list or dict
of ids is ever built by a reader).

Legend: N records, T bytes of all ids together, F = ceil(N / FENCE_STRIDE).
    index.ids.npy        uint8  [T]      UTF-8 ids back to back
    index.id_offsets.npy int64  [N + 1]  id of record i = ids[id_offsets[i]:id_offsets[i + 1]]
    index.id_hash.npy    uint64 [N]      FNV-1a 64 of every id, sorted
    index.id_order.npy   int64  [N]      record whose id has hash id_hash[j]
    index.id_fence.npy   uint64 [F]      id_hash[::FENCE_STRIDE], read into memory (8 KB per 1M images)

A lookup hashes the id, finds its block of FENCE_STRIDE hashes through the fence (in memory), binary-searches that
block (one 4 KiB page of the memory map), and compares the stored id of each record with that hash (collisions are
resolved by the ids themselves, so a lookup never returns another image's record). FNV-1a 64 (Fowler, Noll, Vo;
offset basis 0xcbf29ce484222325, prime 0x100000001b3) is a fixed, documented function: the index reads the same
on every machine and Python version (Python's own hash() of a str is salted per process).
"""

from __future__ import annotations

import numpy as np

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
FENCE_STRIDE = 512  # 512 x 8 bytes: one block of the hash array is one 4 KiB page
_MASK64 = (1 << 64) - 1
_CHUNK = 1 << 20  # records hashed per vectorised pass (bounds the temporary memory)


def id_hash(image_id: str) -> int:
    """FNV-1a 64 of the id's UTF-8 bytes."""
    h = FNV_OFFSET
    for byte in image_id.encode("utf-8"):
        h = ((h ^ byte) * FNV_PRIME) & _MASK64
    return h


def hash_ids(ids_T: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """[N] uint64 FNV-1a 64 of every id (the same values as `id_hash`), vectorised over records, column by column."""
    n = len(offsets) - 1
    out = np.empty(n, np.uint64)
    prime = np.uint64(FNV_PRIME)
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        starts = np.asarray(offsets[lo:hi], np.int64)
        lengths = np.asarray(offsets[lo + 1 : hi + 1], np.int64) - starts
        h = np.full(hi - lo, FNV_OFFSET, np.uint64)
        shortest = int(lengths.min(initial=0))
        for j in range(int(lengths.max(initial=0))):
            if j < shortest:  # every id is longer than j: no selection needed
                h = (h ^ ids_T[starts + j].astype(np.uint64)) * prime
            else:
                rows = np.flatnonzero(lengths > j)
                h[rows] = (h[rows] ^ ids_T[starts[rows] + j].astype(np.uint64)) * prime
        out[lo:hi] = h
    return out


def sorted_hash_index(hashes_N: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(id_hash, id_order, id_fence) of the module docstring from the hashes in record order."""
    order = np.argsort(hashes_N, kind="stable").astype(np.int64)
    sorted_hashes = hashes_N[order]
    return sorted_hashes, order, np.ascontiguousarray(sorted_hashes[::FENCE_STRIDE])


class IdLookup:
    """Image id -> record, and record -> image id, over the memory-mapped arrays of the module docstring."""

    def __init__(self, ids_T, id_offsets, id_hash_N, id_order_N, id_fence_F):
        self.ids, self.offsets = ids_T, id_offsets
        self.hashes, self.order, self.fence = id_hash_N, id_order_N, np.asarray(id_fence_F)

    def id_at(self, i: int) -> str:
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return bytes(self.ids[lo:hi]).decode("utf-8", errors="replace")

    def find(self, image_id: str) -> int | None:
        """The record holding `image_id` (the first in storage order if several do), or None."""
        h = np.uint64(id_hash(image_id))
        block = max(0, int(np.searchsorted(self.fence, h, side="left")) - 1)
        lo = block * FENCE_STRIDE
        window = self.hashes[lo : lo + 2 * FENCE_STRIDE]  # equal hashes may straddle a block edge
        j = lo + int(np.searchsorted(window, h, side="left"))
        while j < len(self.hashes) and self.hashes[j] == h:  # equal hashes are in record order (a stable sort)
            record = int(self.order[j])
            if self.id_at(record) == image_id:
                return record
            j += 1
        return None
