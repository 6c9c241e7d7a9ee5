"""The bottom-up-attention TSV: lines built by hand (and by csv.DictWriter, as generate_tsv.py writes them) read
back exactly; each malformed line raises naming file, record and line, or is skipped and counted."""

import csv
import dataclasses
import re

import numpy as np
import pytest

from vlbert_fast.data.formats import FormatError, SkipCounter, iter_bua_tsv, read_bua_tsv, write_bua_tsv

from .helpers import assert_same, b64, classic_tsv_line, make_record, tsv_line

FIELDNAMES = ["image_id", "image_w", "image_h", "num_boxes", "boxes", "features"]


def records(n: int, dim: int = 8, classes: int | None = None, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [make_record(rng, f"{1000 + i}", (i * 3) % 5, dim=dim, classes=classes) for i in range(n)]


def test_csv_dictwriter_file_reads_exactly_even_past_the_csv_field_limit(tmp_path):
    want = records(3)
    want.append(make_record(np.random.default_rng(9), "big", 36, dim=2048, classes=None))  # ~400 KB of base64
    path = tmp_path / "feats.tsv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, delimiter="\t", fieldnames=FIELDNAMES)
        for r in want:
            writer.writerow(
                {"image_id": r.image_id, "image_w": r.image_w, "image_h": r.image_h, "num_boxes": r.num_boxes}
                | {"boxes": b64(r.boxes), "features": b64(r.features)}
            )
    assert len(b64(want[-1].features)) > csv.field_size_limit()
    got = read_bua_tsv(path)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert_same(g, w)
    assert got[0].num_boxes == 0 and got[0].features.shape == (0, 0)


def test_writer_output_is_byte_identical_to_hand_built_lines_and_lf_also_reads(tmp_path):
    want = records(4, seed=1)
    write_bua_tsv(tmp_path / "ours.tsv", want)
    by_hand = "".join(classic_tsv_line(r) for r in want)
    assert (tmp_path / "ours.tsv").read_bytes() == by_hand.encode()
    (tmp_path / "lf.tsv").write_text(by_hand.replace("\r\n", "\n") + "\n\n")  # LF endings, trailing blank lines
    for g, w in zip(read_bua_tsv(tmp_path / "lf.tsv"), want, strict=True):
        assert_same(g, w)


def test_optional_classes_column_round_trips(tmp_path):
    want = records(3, classes=7, seed=2)
    lines = [classic_tsv_line(r)[:-2] + "\t" + b64(r.classes) + "\r\n" for r in want]
    (tmp_path / "c.tsv").write_text("".join(lines))
    for g, w in zip(read_bua_tsv(tmp_path / "c.tsv"), want, strict=True):
        assert_same(g, w)
    write_bua_tsv(tmp_path / "c2.tsv", want)
    assert (tmp_path / "c2.tsv").read_bytes() == "".join(lines).encode()


def test_the_six_column_reader_stays_strict(tmp_path):
    six, seven = records(2, classes=3, seed=3)
    lines = [classic_tsv_line(six), classic_tsv_line(seven)[:-2] + "\t" + b64(seven.classes) + "\r\n"]
    (tmp_path / "mixed.tsv").write_text("".join(lines))
    message = "expected 6 tab-separated fields (image_id, image_w, image_h, num_boxes, boxes, features), as set by "
    with pytest.raises(FormatError, match=re.escape(f"mixed.tsv, record 1 (line 2): {message}the file's first line")):
        read_bua_tsv(tmp_path / "mixed.tsv")
    (tmp_path / "seven.tsv").write_text(lines[1])
    with pytest.raises(FormatError, match=re.escape(f"seven.tsv, record 0 (line 1): {message}with_classes=False")):
        read_bua_tsv(tmp_path / "seven.tsv", with_classes=False)


def write_with_bad_lines(path):
    good = records(5, seed=4)
    r = good[1]
    lines = [classic_tsv_line(g) for g in good]
    bad = [
        tsv_line(r.image_id, r.image_w, r.image_h, r.num_boxes, b64(r.boxes)),  # a field missing
        tsv_line("x7", 64, 48, 1, "QUJD$$$$", b64(np.zeros(8))),  # bad base64
        tsv_line("x8", 64, 48, 3, b64(np.zeros((2, 4))), b64(np.zeros((2, 8)))),  # num_boxes 3, arrays hold 2
    ]
    # good, bad, good, bad, good, bad, good, good: each bad line sits between good ones
    path.write_text("".join([lines[0], bad[0], lines[1], bad[1], lines[2], bad[2], lines[3], lines[4]]))
    return good


def test_each_malformed_line_raises_naming_file_record_and_line(tmp_path):
    path = tmp_path / "bad.tsv"
    write_with_bad_lines(path)
    with pytest.raises(FormatError) as info:
        read_bua_tsv(path)
    assert str(info.value) == (
        f"{path}, record 1 (line 2): expected 6 tab-separated fields (image_id, image_w, image_h, num_boxes, boxes, "
        "features), as set by the file's first line, found 5"
    )
    counter = SkipCounter("skip")  # the errors of the lines after it, in full
    read_bua_tsv(path, counter)
    assert counter.examples[1:] == [
        f"{path}, record 'x7' (line 4), field 'boxes': expected base64 text, found character '$' at offset 4 "
        "(Only base64 data is allowed)",
        f"{path}, record 'x8' (line 6), field 'boxes': expected 12 float32 values (3 x 4), found 8 (32 decoded bytes)",
    ]


def test_skip_mode_counts_the_bad_lines_and_keeps_the_good_ones(tmp_path):
    path = tmp_path / "bad.tsv"
    good = write_with_bad_lines(path)
    counter = SkipCounter("skip")
    got = read_bua_tsv(path, counter)
    assert [g.image_id for g in got] == [g.image_id for g in good]
    for g, w in zip(got, good, strict=True):
        assert_same(g, w)
    assert counter.total == 3
    assert counter.by_reason() == {
        (str(path), "wrong field count"): 1,
        (str(path), "bad base64"): 1,
        (str(path), "wrong size of 'boxes'"): 1,
    }
    with pytest.raises(FormatError):  # raise mode stops at the first
        list(iter_bua_tsv(path, SkipCounter("raise")))


def test_python3_bytes_repr_gets_a_hint_and_writer_refuses_what_it_cannot_hold(tmp_path):
    r = records(2, seed=5)[1]
    (tmp_path / "b.tsv").write_text(tsv_line(r.image_id, 64, 48, r.num_boxes, f"b'{b64(r.boxes)}'", b64(r.features)))
    with pytest.raises(FormatError, match=r"field 'boxes': found Python's bytes repr b'...' instead of base64"):
        read_bua_tsv(tmp_path / "b.tsv")
    with pytest.raises(ValueError, match="has an image_box_feature, which the bottom-up TSV has no column for"):
        write_bua_tsv(tmp_path / "w.tsv", [dataclasses.replace(r, image_box_feature=np.zeros(8, np.float32))])
    with pytest.raises(FormatError, match="cannot open"):
        read_bua_tsv(tmp_path / "missing.tsv")
