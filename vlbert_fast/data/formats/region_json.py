"""The per-image region-feature JSON of the original VL-BERT (its Conceptual Captions `frcnn` files).

One JSON object per image:
    {"image_id": ..., "image_w": W, "image_h": H, "num_boxes": N,
     "boxes": b64([N, 4]), "features": b64([N, D]), "classes": b64([N, C]) (optional),
     "image_box_feature": b64([D]) (optional, our addition)}
where b64(a) is the base64 text of the raw little-endian float32 bytes of `a`, row-major. The original decodes with
`base64.decodebytes`, which also accepts MIME-style text broken into lines; so do we (whitespace is dropped first),
but any other non-alphabet character is an error rather than being skipped silently.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
from pathlib import Path

import numpy as np

from .errors import FormatError
from .regions import RegionRecord, validate

_WHITESPACE = re.compile(r"\s+")
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=]")
_FLOAT32_LE = np.dtype("<f4")


def encode_array(array: np.ndarray) -> str:
    """base64 text of the array's values as raw little-endian float32, row-major."""
    return base64.b64encode(np.ascontiguousarray(array, dtype=_FLOAT32_LE).tobytes()).decode("ascii")


def _b64_bytes(text: object, *, source, record, field, line) -> bytes:
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    if not isinstance(text, str):
        raise FormatError(source, record, field, "a base64 string", type(text).__name__, line=line)
    if "\n" in text or "\r" in text or " " in text:
        text = _WHITESPACE.sub("", text)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        bad = _NOT_BASE64.search(text)
        where = f"character {bad.group()!r} at offset {bad.start()}" if bad else f"{len(text)} characters"
        raise FormatError(
            source, record, field, "base64 text", f"{where} ({exc})", line=line, reason="bad base64"
        ) from None


def decode_array(
    b64: object, shape_hint: tuple[int, ...], *, source, record, field, line: int | None = None
) -> np.ndarray:
    """Decodes base64 float32 bytes into a writable float32 array of `shape_hint` (one entry may be -1: inferred).

    Raises FormatError naming source, record and field on bad base64 or a byte count that does not fit the shape.
    """
    raw = _b64_bytes(b64, source=source, record=record, field=field, line=line)
    count = len(raw) / _FLOAT32_LE.itemsize
    known = math.prod(d for d in shape_hint if d != -1)
    shape_text = " x ".join("?" if d == -1 else str(d) for d in shape_hint)
    found = f"{count:g} ({len(raw)} decoded bytes)"
    if -1 in shape_hint:
        if len(raw) % 4 or (known == 0 and count) or (known and int(count) % known):
            expected = f"a multiple of {known} float32 values ({shape_text})"
            raise FormatError(source, record, field, expected, found, line=line, reason=f"wrong size of '{field}'")
        inferred = int(count) // known if known else 0
        shape = tuple(inferred if d == -1 else d for d in shape_hint)
    else:
        if count != known:
            expected = f"{known} float32 values ({shape_text})"
            raise FormatError(source, record, field, expected, found, line=line, reason=f"wrong size of '{field}'")
        shape = tuple(shape_hint)
    # frombuffer is read-only and little-endian; the copy is native, writable, and owns its memory.
    return np.frombuffer(raw, dtype=_FLOAT32_LE).astype(np.float32).reshape(shape)


def _int_field(obj: dict, field: str, *, source, record, minimum: int) -> int:
    if field not in obj:
        raise FormatError(source, record, field, message="missing", reason=f"missing '{field}'")
    value = obj[field]
    # Some writers store sizes as floats (640.0); accept those when integral, nothing else.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FormatError(source, record, field, f"an integer >= {minimum}", repr(value))
    return value


def parse_region_object(obj: object, source: str) -> RegionRecord:
    """A decoded region JSON object (a dict) to a validated RegionRecord."""
    if not isinstance(obj, dict):
        raise FormatError(source, None, None, "a JSON object", type(obj).__name__)
    image_id = obj.get("image_id")
    if isinstance(image_id, int) and not isinstance(image_id, bool):
        image_id = str(image_id)
    if not isinstance(image_id, str) or not image_id:
        raise FormatError(source, None, "image_id", "a non-empty string or an integer", repr(image_id))
    where = {"source": source, "record": image_id}
    image_w = _int_field(obj, "image_w", minimum=1, **where)
    image_h = _int_field(obj, "image_h", minimum=1, **where)
    num = _int_field(obj, "num_boxes", minimum=0, **where)
    for field in ("boxes", "features"):
        if field not in obj:
            raise FormatError(source, image_id, field, message="missing", reason=f"missing '{field}'")
    boxes = decode_array(obj["boxes"], (num, 4), field="boxes", **where)
    features = decode_array(obj["features"], (num, -1), field="features", **where)
    whole = obj.get("image_box_feature")
    if whole is not None:
        whole = decode_array(whole, (-1,), field="image_box_feature", **where)
        if num == 0:
            features = features.reshape(0, whole.shape[0])
    classes = obj.get("classes")
    if classes is not None:
        classes = decode_array(classes, (num, -1), field="classes", **where)
    record = RegionRecord(image_id, image_w, image_h, boxes, features, classes, whole)
    validate(source, record)
    return record


def read_region_json(path_or_bytes: str | os.PathLike | bytes, source: str | None = None) -> RegionRecord:
    """Reads one region JSON from a file, or from its bytes (e.g. a zip member); `source` names it in errors."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
        source = source or "<bytes>"
    else:
        source = source or os.fspath(path_or_bytes)
        try:
            data = Path(path_or_bytes).read_bytes()
        except OSError as exc:
            raise FormatError(source, message=f"cannot read: {exc.strerror or exc}", reason="unreadable file") from None
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(source, message=f"invalid JSON: {exc}", reason="invalid JSON") from None
    return parse_region_object(obj, source)


def region_object(record: RegionRecord) -> dict:
    """The JSON object of a record, fields in the original's order."""
    validate("<record to write>", record)
    obj = {
        "image_id": record.image_id,
        "image_w": int(record.image_w),
        "image_h": int(record.image_h),
        "num_boxes": record.num_boxes,
        "boxes": encode_array(record.boxes),
        "features": encode_array(record.features),
    }
    if record.classes is not None:
        obj["classes"] = encode_array(record.classes)
    if record.image_box_feature is not None:
        obj["image_box_feature"] = encode_array(record.image_box_feature)
    return obj


def region_json_bytes(record: RegionRecord) -> bytes:
    """The file's bytes, e.g. for a member of a zip archive."""
    return json.dumps(region_object(record)).encode("utf-8")


def write_region_json(path: str | os.PathLike, record: RegionRecord) -> None:
    Path(path).write_bytes(region_json_bytes(record))
