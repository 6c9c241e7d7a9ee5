"""The bottom-up-attention TSV (Anderson et al. 2018, `tools/generate_tsv.py`): one image per line, no header,
tab-separated columns

    image_id  image_w  image_h  num_boxes  boxes  features

with `boxes` ([N, 4]) and `features` ([N, D]) as base64 of raw little-endian float32 bytes. The original writes it
with `csv.DictWriter(delimiter="\\t")`, so lines end in CRLF; we read LF or CRLF and write CRLF like the original.

Classes: the classic files have exactly these 6 columns and no class scores. A 7th column `classes` ([N, C] soft
labels, same encoding) is accepted, but strictly: every line of one file must have the same number of columns,
decided by `with_classes` or, when that is None, by the first line. A classic file with a stray 7-field line is
therefore an error on that line, not a silently different record.

We parse lines ourselves instead of through `csv`: the classic files never quote (base64 has no tabs, quotes or
newlines), a line is a record so errors carry exact line numbers, and there is no field size limit to raise (the
`csv` module's default of 128 KiB is smaller than one line of 36 x 2048 features).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import numpy as np

from .errors import FormatError, SkipCounter
from .region_json import decode_array, encode_array
from .regions import RegionRecord, validate

CLASSIC_COLUMNS = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features")
COLUMNS_WITH_CLASSES = (*CLASSIC_COLUMNS, "classes")


def _int(text: str, field: str, minimum: int, *, source: str, record: object, line: int) -> int:
    try:
        value = int(text)
    except ValueError:
        try:  # some extractors write sizes as floats ("640.0"); accept them when integral
            as_float = float(text)
            value = int(as_float) if as_float.is_integer() else None
        except ValueError:
            value = None
    if value is None or value < minimum:
        raise FormatError(source, record, field, f"an integer >= {minimum}", repr(text[:40]), line=line)
    return value


def _parse_line(fields: list[str], columns: tuple[str, ...], *, source: str, index: int, line: int) -> RegionRecord:
    image_id = fields[0]
    if len(image_id) >= 2 and image_id[0] == image_id[-1] == '"':  # csv quoting of an id with odd characters
        image_id = image_id[1:-1].replace('""', '"')
    if not image_id:
        raise FormatError(source, index, "image_id", "a non-empty id", "an empty field", line=line)
    where = {"source": source, "record": image_id, "line": line}
    image_w = _int(fields[1], "image_w", 1, **where)
    image_h = _int(fields[2], "image_h", 1, **where)
    num = _int(fields[3], "num_boxes", 0, **where)
    arrays = {}
    for name, text in zip(columns[4:], fields[4:], strict=True):
        if text.startswith(("b'", 'b"')):
            raise FormatError(
                source,
                image_id,
                name,
                line=line,
                message="found Python's bytes repr b'...' instead of base64 text (the writer called str() on bytes)",
                reason="bytes repr instead of base64",
            )
        try:
            arrays[name] = decode_array(text, (num, 4) if name == "boxes" else (num, -1), field=name, **where)
        except FormatError as err:
            raise err.at(line=line) from None
    record = RegionRecord(image_id, image_w, image_h, arrays["boxes"], arrays["features"], arrays.get("classes"))
    try:
        validate(source, record)
    except FormatError as err:
        raise err.at(line=line) from None
    return record


def iter_bua_tsv(
    path: str | os.PathLike, counter: SkipCounter | None = None, *, with_classes: bool | None = None
) -> Iterator[RegionRecord]:
    """Yields one RegionRecord per non-blank line. A malformed line raises FormatError (file, record, line), or
    with a "skip" counter is counted and skipped. `with_classes`: None decides by the first line (module doc)."""
    source = os.fspath(path)
    columns = None if with_classes is None else (COLUMNS_WITH_CLASSES if with_classes else CLASSIC_COLUMNS)
    decided_by = f"with_classes={with_classes}" if with_classes is not None else "the file's first line"
    index = 0
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise FormatError(source, message=f"cannot open: {exc.strerror or exc}", reason="unreadable file") from None
    with handle:
        for line, raw in enumerate(handle, 1):
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise FormatError(source, index, None, line=line, message=f"invalid UTF-8: {exc}") from None
                fields = text.split("\t")
                if columns is None and len(fields) in (len(CLASSIC_COLUMNS), len(COLUMNS_WITH_CLASSES)):
                    columns = CLASSIC_COLUMNS if len(fields) == len(CLASSIC_COLUMNS) else COLUMNS_WITH_CLASSES
                if columns is None or len(fields) != len(columns):
                    expected = (
                        "6 or 7 tab-separated fields"
                        if columns is None
                        else f"{len(columns)} tab-separated fields ({', '.join(columns)}), as set by {decided_by}"
                    )
                    raise FormatError(
                        source, index, None, expected, f"{len(fields)}", line=line, reason="wrong field count"
                    )
                yield _parse_line(fields, columns, source=source, index=index, line=line)
            except FormatError as err:
                if counter is None:
                    raise
                counter.handle(err)
            index += 1


def _encode_id(image_id: str) -> str:
    if any(c in image_id for c in "\t\r\n"):
        raise ValueError(f"write_bua_tsv: image_id {image_id!r} contains a tab or newline, which the TSV cannot hold")
    return image_id


def write_bua_tsv(path: str | os.PathLike, records: Iterable[RegionRecord], *, with_classes: bool | None = None) -> int:
    """Writes records as TSV lines (CRLF, like the original); returns the number written.

    `with_classes`: None takes the first record's choice; every record must then agree. The TSV has no column for
    `image_box_feature`: a record with one is an error rather than silently losing it.
    """
    count = 0
    with open(path, "wb") as out:
        for record in records:
            validate(os.fspath(path), record)
            if with_classes is None:
                with_classes = record.classes is not None
            if with_classes != (record.classes is not None):
                raise ValueError(
                    f"write_bua_tsv: record {record.image_id!r} {'lacks' if with_classes else 'has'} classes, unlike "
                    f"the records before it; one file has one layout"
                )
            if record.image_box_feature is not None:
                raise ValueError(
                    f"write_bua_tsv: record {record.image_id!r} has an image_box_feature, which the bottom-up TSV "
                    f"has no column for; drop it (dataclasses.replace(record, image_box_feature=None)) or write JSON"
                )
            fields = [_encode_id(record.image_id), str(int(record.image_w)), str(int(record.image_h))]
            fields += [str(record.num_boxes), encode_array(record.boxes), encode_array(record.features)]
            if with_classes:
                fields.append(encode_array(np.asarray(record.classes)))
            out.write("\t".join(fields).encode("utf-8") + b"\r\n")
            count += 1
    return count


def read_bua_tsv(path: str | os.PathLike, counter: SkipCounter | None = None, **kwargs) -> list[RegionRecord]:
    return list(iter_bua_tsv(path, counter, **kwargs))


__all__ = ["CLASSIC_COLUMNS", "COLUMNS_WITH_CLASSES", "iter_bua_tsv", "read_bua_tsv", "write_bua_tsv"]
