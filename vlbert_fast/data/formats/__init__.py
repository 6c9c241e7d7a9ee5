"""Readers and writers of the real data formats of VL-BERT pretraining.

- region_json: the original's per-image region-feature JSON (its Conceptual Captions `frcnn` files);
- bua_tsv: the bottom-up-attention TSV of region features;
- cc_jsonl: Conceptual Captions annotations (JSON Lines) with `archive.zip@/member` path specs (paths);
- text_corpus: the text-only corpus, one unit per line;
- shards: our ragged, memory-mapped feature shards with a binary id index (format 2), their writer and converter;
  shards_padded: format 1 (padded), read for conversion and measured beside format 2 by `vlbert-fast bench data`.

Every reader raises FormatError (file, record, field, expected, found) on a malformed record, or, given a
SkipCounter in "skip" mode, counts it and moves on.
"""

from .bua_tsv import iter_bua_tsv, read_bua_tsv, write_bua_tsv
from .cc_jsonl import CaptionRecord, iter_cc_jsonl, read_cc_jsonl, write_cc_jsonl
from .errors import FormatError, SkipCounter
from .paths import ResolvedPath, close_archives, path_exists, read_bytes, resolve_path
from .region_json import decode_array, encode_array, read_region_json, region_json_bytes, write_region_json
from .regions import RegionRecord, clip_to_image, validate
from .shard_reader import FeatureShards
from .shard_writer import ShardWriter, convert_to_shards
from .text_corpus import iter_text_corpus, read_text_corpus

__all__ = [
    "CaptionRecord",
    "FeatureShards",
    "FormatError",
    "RegionRecord",
    "ResolvedPath",
    "ShardWriter",
    "SkipCounter",
    "clip_to_image",
    "close_archives",
    "convert_to_shards",
    "decode_array",
    "encode_array",
    "iter_bua_tsv",
    "iter_cc_jsonl",
    "iter_text_corpus",
    "path_exists",
    "read_bua_tsv",
    "read_bytes",
    "read_cc_jsonl",
    "read_region_json",
    "read_text_corpus",
    "region_json_bytes",
    "resolve_path",
    "validate",
    "write_bua_tsv",
    "write_cc_jsonl",
    "write_region_json",
]
