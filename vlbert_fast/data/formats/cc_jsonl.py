"""Conceptual Captions as the original VL-BERT ships it: JSON Lines (its files are named `train_frcnn.json`),
one object per line

    {"image": "<spec>", "caption": ["a", "red", "circle"], "frcnn": "<spec of the region JSON>"}

where each spec is a path or `archive.zip@/member` relative to the dataset directory (see paths.py). The original's
captions are token lists; user files may hold a string, which is split on whitespace. Other keys are ignored.
An empty caption is an error: it has nothing to train on. `frcnn` may be absent or null (images without
precomputed features, used end to end).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .errors import FormatError, SkipCounter


@dataclass
class CaptionRecord:
    image: str
    """Spec of the image (path or archive.zip@/member)."""
    caption: list[str]
    """The caption's words (the original's basic-tokenized tokens)."""
    frcnn: str | None = None
    """Spec of the image's region-feature JSON, or None."""

    @property
    def feature_key(self) -> str | None:
        """The key of this caption's regions in FeatureShards made by `vlbert-fast convert-features` from this
        file: the `frcnn` spec itself (what a dataset has in hand without opening the JSON), not the image_id
        inside the JSON."""
        return self.frcnn


def _parse(obj: object, *, source: str, index: int, line: int) -> CaptionRecord:
    where = {"line": line}
    if not isinstance(obj, dict):
        raise FormatError(source, index, None, "a JSON object", type(obj).__name__, **where)
    image = obj.get("image")
    if "image" not in obj:
        raise FormatError(source, index, "image", message="missing", reason="missing 'image'", **where)
    if not isinstance(image, str) or not image:
        raise FormatError(source, index, "image", "a non-empty path string", repr(image)[:80], **where)
    if "caption" not in obj:
        raise FormatError(source, index, "caption", message="missing", reason="missing 'caption'", **where)
    caption = obj["caption"]
    if isinstance(caption, str):
        tokens = caption.split()
    elif isinstance(caption, list) and all(isinstance(t, str) for t in caption):
        tokens = [t for t in caption if t.strip()]
    else:
        raise FormatError(source, index, "caption", "a list of strings or a string", repr(caption)[:80], **where)
    if not tokens:
        raise FormatError(source, index, "caption", "at least one word", "an empty caption", **where)
    frcnn = obj.get("frcnn")
    if frcnn is not None and (not isinstance(frcnn, str) or not frcnn):
        raise FormatError(source, index, "frcnn", "a non-empty path string or null", repr(frcnn)[:80], **where)
    return CaptionRecord(image, tokens, frcnn)


def iter_cc_jsonl(path: str | os.PathLike, counter: SkipCounter | None = None) -> Iterator[CaptionRecord]:
    """Yields one CaptionRecord per non-blank line. Invalid JSON, a missing field or a wrong type raises FormatError
    naming the file, record and line, or with a "skip" counter is counted and skipped."""
    source = os.fspath(path)
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise FormatError(source, message=f"cannot open: {exc.strerror or exc}", reason="unreadable file") from None
    index = 0
    with handle:
        for line, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                try:
                    obj = json.loads(raw)
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise FormatError(
                        source, index, None, line=line, message=f"invalid JSON: {exc}", reason="invalid JSON"
                    ) from None
                yield _parse(obj, source=source, index=index, line=line)
            except FormatError as err:
                if counter is None:
                    raise
                counter.handle(err)
            index += 1


def read_cc_jsonl(path: str | os.PathLike, counter: SkipCounter | None = None) -> list[CaptionRecord]:
    return list(iter_cc_jsonl(path, counter))


def write_cc_jsonl(path: str | os.PathLike, records: Iterable[CaptionRecord]) -> int:
    """One JSON object per line, keys in the original's order; `frcnn` left out when None. Returns the count."""
    count = 0
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        for record in records:
            obj: dict = {"image": record.image, "caption": list(record.caption)}
            if record.frcnn is not None:
                obj["frcnn"] = record.frcnn
            _parse(obj, source=os.fspath(path), index=count, line=count + 1)  # never write what we would not read
            out.write(json.dumps(obj, ensure_ascii=False) + "\n")
            count += 1
    return count
