"""Readers of the real VCR 1.0 files (visualcommonsense.com): the annotation JSON Lines and the per-image metadata.

`train.jsonl` / `val.jsonl` / `test.jsonl`, one JSON object per line, of which we use:
    annot_id            "val-0"                              the id the leaderboard CSV is keyed by
    objects             ["person", "person", "chair"]        class name of each detection, in metadata order
    img_fn, metadata_fn "lsmdc_.../x@0.jpg", "lsmdc_.../x@0.json"   relative to the image folder (vcr1images)
    question            ["Why", "is", [0], "smiling", "?"]   a token is a word or a list of detection indices
    answer_choices      4 token lists, same form
    rationale_choices   4 token lists, same form
    answer_label, rationale_label   0..3 (absent from test.jsonl)
    movie, img_id, question_number  kept in `extra` when present
The metadata JSON of an image: boxes [[x1, y1, x2, y2, score], ...] (one per object), segms (per object a list of
polygons, each a list of [x, y] points), width, height, names (the class names again).

Every malformed record raises FormatError naming the file, the line (1-based) and the field.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...data.formats import FormatError

NUM_CHOICES = 4
Token = str | list[int]


@dataclass
class VCRRecord:
    annot_id: str
    objects: list[str]
    img_fn: str
    metadata_fn: str
    question: list[Token]
    answer_choices: list[list[Token]]
    rationale_choices: list[list[Token]]
    answer_label: int | None = None
    """Index of the right answer; None in the test split."""
    rationale_label: int | None = None
    """Index of the right rationale; None in the test split."""
    extra: dict[str, Any] = field(default_factory=dict)
    """movie, img_id, question_number when the line has them."""
    source: str = ""
    """"file, line N": where the record came from (for errors about its image or regions)."""


@dataclass
class VCRMetadata:
    boxes: list[list[float]]
    """[N][4] (x1, y1, x2, y2) in image pixels (the file's fifth value, the detector score, is dropped)."""
    segms: list[list[list[list[float]]]]
    """[N] objects x polygons x points x (x, y)."""
    width: int
    height: int
    names: list[str]


def _check_tokens(value: object, num_objects: int, fail, name: str) -> list[Token]:
    if not isinstance(value, list) or not value:
        fail(name, "a non-empty list of tokens", repr(value)[:80])
    for i, tok in enumerate(value):
        if isinstance(tok, str):
            continue
        if not isinstance(tok, list) or not tok:
            fail(name, f"token {i} to be a word or a non-empty list of object indices", repr(tok)[:80])
        for idx in tok:
            if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < num_objects:
                fail(name, f"object indices in [0, {num_objects}) (len(objects)) in token {i}", repr(tok)[:80])
    return value


def _check_label(obj: dict, key: str, fail) -> int:
    if key not in obj:
        fail(key, "a label 0..3 (test.jsonl has none: read it with labelled=False)", "no such field")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < NUM_CHOICES:
        fail(key, f"an integer in [0, {NUM_CHOICES})", repr(value))
    return value


def parse_record(obj: object, source: str, line: int, labelled: bool) -> VCRRecord:
    """One decoded jsonl line to a checked VCRRecord; FormatError(source, line, field) when it is malformed."""

    def fail(name: str, expected: str, found: object) -> None:
        raise FormatError(source, None, name, expected, found, line=line)

    if not isinstance(obj, dict):
        raise FormatError(source, None, None, "a JSON object", type(obj).__name__, line=line)
    for key in ("annot_id", "img_fn", "metadata_fn"):
        if not isinstance(obj.get(key), str) or not obj[key]:
            fail(key, "a non-empty string", repr(obj.get(key, "<missing>")))
    objects = obj.get("objects")
    if not isinstance(objects, list) or not all(isinstance(o, str) and o for o in objects):
        fail("objects", "a list of class names", repr(objects)[:80])
    question = _check_tokens(obj.get("question"), len(objects), fail, "question")
    choices = {}
    for key in ("answer_choices", "rationale_choices"):
        value = obj.get(key)
        if not isinstance(value, list) or len(value) != NUM_CHOICES:
            fail(key, f"a list of {NUM_CHOICES} token lists", repr(value)[:80])
        choices[key] = [_check_tokens(c, len(objects), fail, f"{key}[{i}]") for i, c in enumerate(value)]
    extra = {k: obj[k] for k in ("movie", "img_id", "question_number") if k in obj}
    return VCRRecord(
        annot_id=obj["annot_id"],
        objects=list(objects),
        img_fn=obj["img_fn"],
        metadata_fn=obj["metadata_fn"],
        question=question,
        answer_choices=choices["answer_choices"],
        rationale_choices=choices["rationale_choices"],
        answer_label=_check_label(obj, "answer_label", fail) if labelled else None,
        rationale_label=_check_label(obj, "rationale_label", fail) if labelled else None,
        extra=extra,
        source=f"{source}, line {line}",
    )


def read_vcr_jsonl(path: str | os.PathLike, labelled: bool = True) -> list[VCRRecord]:
    """All records of a VCR annotation file; `labelled=False` for test.jsonl (labels, if present, are ignored)."""
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise FormatError(source, message=f"cannot read: {exc.strerror or exc}", reason="unreadable file") from None
    records, seen = [], {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise FormatError(source, line=number, message=f"invalid JSON: {exc}", reason="invalid JSON") from None
        record = parse_record(obj, source, number, labelled)
        if record.annot_id in seen:
            raise FormatError(
                source,
                None,
                "annot_id",
                "ids unique in the file",
                f"{record.annot_id!r} again (first on line {seen[record.annot_id]})",
                line=number,
            )
        seen[record.annot_id] = number
        records.append(record)
    if not records:
        raise FormatError(source, message="no records", reason="no records")
    return records


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_metadata(obj: object, source: str) -> VCRMetadata:
    """A decoded metadata JSON object to a checked VCRMetadata; FormatError(source, field) when malformed."""

    def fail(name: str, expected: str, found: object) -> None:
        raise FormatError(source, None, name, expected, found)

    if not isinstance(obj, dict):
        fail("<root>", "a JSON object", type(obj).__name__)
    for key in ("width", "height"):
        value = obj.get(key)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            fail(key, "a positive integer", repr(value))
        obj = {**obj, key: value}
    boxes = obj.get("boxes")
    if not isinstance(boxes, list):
        fail("boxes", "a list of [x1, y1, x2, y2, score]", repr(boxes)[:80])
    clean = []
    for i, box in enumerate(boxes):
        if not isinstance(box, list) or len(box) not in (4, 5) or not all(_number(v) for v in box):
            fail("boxes", f"box {i} as [x1, y1, x2, y2, score]", repr(box)[:80])
        if box[2] < box[0] or box[3] < box[1]:
            fail("boxes", f"x2 >= x1 and y2 >= y1 in box {i}", repr(box))
        clean.append([float(v) for v in box[:4]])
    segms = obj.get("segms")
    if not isinstance(segms, list) or len(segms) != len(boxes):
        fail("segms", f"a list of {len(boxes)} polygon lists (one per box)", repr(segms)[:80])
    for i, polygons in enumerate(segms):
        if not isinstance(polygons, list):
            fail("segms", f"object {i}: a list of polygons", repr(polygons)[:80])
        for j, poly in enumerate(polygons):
            ok = isinstance(poly, list) and all(
                isinstance(p, list) and len(p) == 2 and all(_number(v) for v in p) for p in poly
            )
            if not ok:
                fail("segms", f"object {i}, polygon {j}: a list of [x, y] points", repr(poly)[:80])
    names = obj.get("names", [])
    if not isinstance(names, list) or (names and len(names) != len(boxes)):
        fail("names", f"a list of {len(boxes)} class names", repr(names)[:80])
    return VCRMetadata(clean, segms, obj["width"], obj["height"], list(names))


def read_metadata(data: bytes, source: str) -> VCRMetadata:
    """Metadata from the bytes of its file (a file on disk or a zip member); `source` names it in errors."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(source, message=f"invalid JSON: {exc}", reason="invalid JSON") from None
    return parse_metadata(obj, source)
