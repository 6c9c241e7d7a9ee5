"""Readers and writers of the RefCOCO+ files as the refer toolkit (Licheng Yu's `refer`) ships them.

- `refs(unc).p`: a pickle of a list of refs, each a dict
  {ref_id, ann_id, image_id, category_id, split, sentences: [{tokens, raw, sent, sent_id}], sent_ids, file_name};
  the unc splits are train, val, testA (images of people) and testB (images of other objects).
- `instances.json`: COCO style, {images: [{id, width, height, file_name}], annotations: [{id, image_id,
  bbox: [x, y, w, h], category_id, area, iscrowd, segmentation}], categories: [{id, name}]}.
- detections for the detected-box protocol, in any of three layouts: the original VL-BERT's
  `res101_coco_minus_refer_notime_dets.json`, a list of {image_id, box: [x, y, w, h], ...}; the refer toolkit's
  {"dets": [the same records]}; or a mapping {"<image_id>": [[x1, y1, x2, y2], ...]}.

The pickle is read with an unpickler that builds only containers, strings and numbers: a refs file is data, and
one from elsewhere must not be able to run code (a pickle can name any importable function to call). Boxes leave
this module as (x1, y1, x2, y2) floats: the COCO conversion x2 = x + w, y2 = y + h is made here, once.
Every malformed record raises FormatError naming the file, the record and the field.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...data.formats import FormatError

REF_SPLITS = ("train", "val", "testA", "testB", "testC", "test")
"""Split names the refer toolkit's files use (RefCOCO+ unc: train, val, testA, testB)."""

# Protocol 2 pickles (what the toolkit's Python 2 files are) name the builtin containers through find_class; these
# are the only globals a refs file may name. Everything else (os.system, eval, any class) is refused.
_SAFE_GLOBALS = {
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("__builtin__", "set"),
    ("__builtin__", "frozenset"),
}


class _DataOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        # Python 2 `str` objects come back decoded; the toolkit's files are UTF-8 (or ASCII) text.
        super().__init__(file, encoding="utf-8")
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS:
            return {"set": set, "frozenset": frozenset}[name]
        raise FormatError(
            self.source,
            message=f"refused to load the global {module}.{name}: a refs pickle holds only lists, dicts, strings "
            "and numbers, and loading anything else would run code from the file",
            reason="unsafe pickle",
        )

    def persistent_load(self, pid):
        raise FormatError(
            self.source, message="refused a persistent id: not a plain data pickle", reason="unsafe pickle"
        )


def load_data_pickle(path: str | os.PathLike) -> object:
    """Unpickles a file that may only contain containers, strings and numbers (module docstring)."""
    source = os.fspath(path)
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise FormatError(source, message=f"cannot read: {err.strerror or err}", reason="unreadable") from None
    try:
        return _DataOnlyUnpickler(io.BytesIO(data), source).load()
    except FormatError:
        raise
    except (pickle.UnpicklingError, EOFError, UnicodeDecodeError, ValueError, TypeError, IndexError) as err:
        raise FormatError(source, message=f"not a readable pickle: {err}", reason="bad pickle") from None


@dataclass
class Sentence:
    sent_id: int
    tokens: list[str]
    """The expression's words (the toolkit's tokenisation, lower case); what the model reads."""
    raw: str = ""
    sent: str = ""


@dataclass
class Ref:
    ref_id: int
    ann_id: int
    """The COCO annotation of the referred object: its bbox is the target."""
    image_id: int
    category_id: int
    split: str
    sentences: list[Sentence]
    file_name: str = ""


@dataclass
class ImageInfo:
    id: int
    width: int
    height: int
    file_name: str = ""


@dataclass
class Annotation:
    id: int
    image_id: int
    box: tuple[float, float, float, float]
    """(x1, y1, x2, y2) = (x, y, x + w, y + h) of the COCO bbox."""
    category_id: int


@dataclass
class Instances:
    images: dict[int, ImageInfo] = field(default_factory=dict)
    annotations: dict[int, Annotation] = field(default_factory=dict)
    by_image: dict[int, list[int]] = field(default_factory=dict)
    """image id -> its annotation ids, in file order (the ground-truth protocol's RoIs)."""
    categories: dict[int, str] = field(default_factory=dict)


def _int(source: str, record: object, obj: dict, key: str) -> int:
    if key not in obj:
        raise FormatError(source, record, key, "an integer", "nothing (the field is missing)")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise FormatError(source, record, key, "an integer", repr(value)[:80])
    return int(value)


def _str(source: str, record: object, obj: dict, key: str, required: bool = True) -> str:
    if key not in obj:
        if not required:
            return ""
        raise FormatError(source, record, key, "a string", "nothing (the field is missing)")
    value = obj[key]
    if not isinstance(value, str):
        raise FormatError(source, record, key, "a string", repr(value)[:80])
    return value


def _box_xywh(source: str, record: object, key: str, value: object) -> tuple[float, float, float, float]:
    """A COCO [x, y, w, h] with finite values and w, h >= 0, as (x1, y1, x2, y2)."""
    ok = isinstance(value, (list, tuple)) and len(value) == 4
    ok = ok and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in value)
    if not ok or not all(np.isfinite(float(v)) for v in value):
        raise FormatError(source, record, key, "[x, y, w, h]: 4 finite numbers", repr(value)[:80])
    x, y, w, h = (float(v) for v in value)
    if w < 0 or h < 0:
        raise FormatError(source, record, key, "a width and height >= 0", f"w={w}, h={h}")
    return (x, y, x + w, y + h)


def _sentence(source: str, record: object, index: int, obj: object) -> Sentence:
    where = f"{record}, sentence {index}"
    if not isinstance(obj, dict):
        raise FormatError(source, where, None, "a dict {tokens, raw, sent, sent_id}", type(obj).__name__)
    tokens = obj.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise FormatError(source, where, "tokens", "a list of strings", repr(tokens)[:80])
    tokens = [t for t in tokens if t.strip()]
    if not tokens:
        raise FormatError(source, where, "tokens", "at least one word", "an empty expression")
    return Sentence(
        _int(source, where, obj, "sent_id"),
        tokens,
        _str(source, where, obj, "raw", False),
        _str(source, where, obj, "sent", False),
    )


def parse_refs(data: object, source: str) -> list[Ref]:
    if not isinstance(data, list):
        raise FormatError(source, None, None, "a list of refs (dicts)", type(data).__name__)
    refs = []
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise FormatError(source, i, None, "a dict (one ref)", type(obj).__name__)
        record = f"{i} (ref_id {obj.get('ref_id')!r})"
        split = _str(source, record, obj, "split")
        if split not in REF_SPLITS:
            raise FormatError(source, record, "split", f"one of {list(REF_SPLITS)}", repr(split))
        sentences = obj.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            raise FormatError(source, record, "sentences", "a non-empty list of sentences", repr(sentences)[:80])
        refs.append(
            Ref(
                ref_id=_int(source, record, obj, "ref_id"),
                ann_id=_int(source, record, obj, "ann_id"),
                image_id=_int(source, record, obj, "image_id"),
                category_id=_int(source, record, obj, "category_id"),
                split=split,
                sentences=[_sentence(source, record, k, s) for k, s in enumerate(sentences)],
                file_name=_str(source, record, obj, "file_name", False),
            )
        )
    return refs


def read_refs(path: str | os.PathLike) -> list[Ref]:
    """The refs of a refer-toolkit pickle (`refs(unc).p`), checked field by field."""
    return parse_refs(load_data_pickle(path), os.fspath(path))


def _load_json(path: str | os.PathLike) -> object:
    source = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as err:
        raise FormatError(source, message=f"cannot read: {err.strerror or err}", reason="unreadable") from None
    except json.JSONDecodeError as err:
        raise FormatError(source, line=err.lineno, message=f"invalid JSON: {err.msg}", reason="invalid JSON") from None


def parse_instances(data: object, source: str) -> Instances:
    if not isinstance(data, dict):
        raise FormatError(source, None, None, "a JSON object {images, annotations, categories}", type(data).__name__)
    out = Instances()
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise FormatError(source, None, key, "a list", repr(data.get(key))[:80])
    for i, obj in enumerate(data["images"]):
        record = f"images[{i}]"
        if not isinstance(obj, dict):
            raise FormatError(source, record, None, "a JSON object", type(obj).__name__)
        info = ImageInfo(
            _int(source, record, obj, "id"),
            _int(source, record, obj, "width"),
            _int(source, record, obj, "height"),
            _str(source, record, obj, "file_name", False),
        )
        if info.width <= 0 or info.height <= 0:
            raise FormatError(source, record, "width/height", "positive sizes", f"{info.width} x {info.height}")
        out.images[info.id] = info
    for i, obj in enumerate(data["annotations"]):
        record = f"annotations[{i}]"
        if not isinstance(obj, dict):
            raise FormatError(source, record, None, "a JSON object", type(obj).__name__)
        ann = Annotation(
            id=_int(source, record, obj, "id"),
            image_id=_int(source, record, obj, "image_id"),
            box=_box_xywh(source, record, "bbox", obj.get("bbox")),
            category_id=_int(source, record, obj, "category_id"),
        )
        if ann.image_id not in out.images:
            raise FormatError(source, record, "image_id", "the id of an image in 'images'", ann.image_id)
        out.annotations[ann.id] = ann
        out.by_image.setdefault(ann.image_id, []).append(ann.id)
    for i, obj in enumerate(data.get("categories") or []):
        if not isinstance(obj, dict):
            raise FormatError(source, f"categories[{i}]", None, "a JSON object", type(obj).__name__)
        out.categories[_int(source, f"categories[{i}]", obj, "id")] = _str(source, f"categories[{i}]", obj, "name")
    return out


def read_instances(path: str | os.PathLike) -> Instances:
    """The images and annotations of a COCO-style `instances.json`."""
    return parse_instances(_load_json(path), os.fspath(path))


def parse_detections(data: object, source: str) -> dict[int, np.ndarray]:
    """image id -> [N, 4] float32 (x1, y1, x2, y2), from any of the three layouts (module docstring)."""
    if isinstance(data, dict) and "dets" in data:
        data = data["dets"]
    out: dict[int, list] = {}
    if isinstance(data, list):  # records with a COCO box each
        for i, obj in enumerate(data):
            if not isinstance(obj, dict):
                raise FormatError(source, i, None, "a JSON object {image_id, box: [x, y, w, h]}", type(obj).__name__)
            image_id = _int(source, i, obj, "image_id")
            out.setdefault(image_id, []).append(_box_xywh(source, i, "box", obj.get("box")))
    elif isinstance(data, dict):  # {"<image_id>": [[x1, y1, x2, y2], ...]}
        for key, boxes in data.items():
            try:
                image_id = int(key)
            except (TypeError, ValueError):
                raise FormatError(source, repr(key), None, "an integer image id as the key", repr(key)) from None
            if not isinstance(boxes, list):
                raise FormatError(source, image_id, None, "a list of [x1, y1, x2, y2] boxes", repr(boxes)[:80])
            for k, box in enumerate(boxes):
                ok = isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)
                if not ok or not all(np.isfinite(v) for v in box) or box[2] < box[0] or box[3] < box[1]:
                    raise FormatError(
                        source, image_id, f"box {k}", "[x1, y1, x2, y2] with x2 >= x1, y2 >= y1", repr(box)[:80]
                    )
                out.setdefault(image_id, []).append(tuple(float(v) for v in box))
    else:
        raise FormatError(
            source, None, None, "a list of detections or a mapping image id -> boxes", type(data).__name__
        )
    return {k: np.asarray(v, dtype=np.float32).reshape(-1, 4) for k, v in out.items()}


def read_detections(path: str | os.PathLike) -> dict[int, np.ndarray]:
    return parse_detections(_load_json(path), os.fspath(path))


def write_refs(path: str | os.PathLike, refs: list[dict]) -> None:
    """Writes refs (the toolkit's dicts) as its pickle does: protocol 2, plain containers only."""
    Path(path).write_bytes(pickle.dumps(refs, protocol=2))


def write_json(path: str | os.PathLike, data: object) -> None:
    Path(path).write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")
