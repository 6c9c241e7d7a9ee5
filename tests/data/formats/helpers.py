"""Builders of small files in the exact byte layout the real ones have, written by hand (base64 of float32 bytes
joined by tabs, json.dumps of the original's fields), independent of the writers under test."""

from __future__ import annotations

import base64
import json

import numpy as np

from vlbert_fast.data.formats import RegionRecord


def b64(array) -> str:
    return base64.b64encode(np.asarray(array, dtype="<f4").tobytes()).decode("ascii")


def make_record(
    rng: np.random.Generator, image_id: str, num: int, dim: int = 8, classes: int | None = 5, w: int = 64, h: int = 48
) -> RegionRecord:
    x1 = rng.uniform(0, w / 2, num)
    y1 = rng.uniform(0, h / 2, num)
    boxes = np.stack([x1, y1, x1 + rng.uniform(1, w / 2, num), y1 + rng.uniform(1, h / 2, num)], 1)
    soft = None
    if classes is not None:
        soft = rng.random((num, classes)).astype(np.float32)
        soft /= soft.sum(1, keepdims=True)
    return RegionRecord(
        image_id, w, h, boxes.astype(np.float32), rng.normal(size=(num, dim)).astype(np.float32), soft, None
    )


def tsv_line(*fields) -> str:
    """One bottom-up TSV line as generate_tsv.py's csv.DictWriter writes it (tab-separated, CRLF)."""
    return "\t".join(str(f) for f in fields) + "\r\n"


def classic_tsv_line(record: RegionRecord) -> str:
    return tsv_line(
        record.image_id, record.image_w, record.image_h, record.num_boxes, b64(record.boxes), b64(record.features)
    )


def region_json_dict(record: RegionRecord) -> dict:
    obj = {
        "image_id": record.image_id,
        "image_w": record.image_w,
        "image_h": record.image_h,
        "num_boxes": record.num_boxes,
        "boxes": b64(record.boxes),
        "features": b64(record.features),
    }
    if record.classes is not None:
        obj["classes"] = b64(record.classes)
    return obj


def region_json_bytes(record: RegionRecord) -> bytes:
    return json.dumps(region_json_dict(record)).encode()


def assert_same(got: RegionRecord, want: RegionRecord, *, atol: float = 0.0, rtol: float = 0.0) -> None:
    assert (got.image_id, got.image_w, got.image_h) == (want.image_id, want.image_w, want.image_h)
    for field in ("boxes", "features", "classes", "image_box_feature"):
        a, b = getattr(got, field), getattr(want, field)
        assert (a is None) == (b is None), field
        if a is not None and a.ndim == 2 and b.shape[0] == 0:  # no rows: text formats cannot carry the width
            assert a.shape[0] == 0 and a.dtype == np.float32, (field, a.shape)
        elif a is not None:
            assert a.dtype == np.float32 and a.shape == b.shape, (field, a.dtype, a.shape, b.shape)
            tol = (0.0, 0.0) if field == "boxes" else (atol, rtol)  # boxes are always stored as float32
            np.testing.assert_allclose(a, b, atol=tol[0], rtol=tol[1], err_msg=field)
