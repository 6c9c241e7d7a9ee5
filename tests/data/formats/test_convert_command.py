"""`vlbert-fast convert-features`: each input kind into shards that read back; bad records fail the run (no index)
or, with --skip-bad, are skipped and reported."""

import argparse
import json
import zipfile

import numpy as np

from vlbert_fast import cli
from vlbert_fast.commands import convert_features
from vlbert_fast.data.formats import FeatureShards

from .helpers import assert_same, classic_tsv_line, make_record, region_json_bytes, tsv_line


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    convert_features.add_arguments(parser)
    return convert_features.main(parser.parse_args(argv), None)


def make(n: int, seed: int, classes: int | None = 4):
    rng = np.random.default_rng(seed)
    return [make_record(rng, f"s{seed}_{i}", 2 + i, dim=6, classes=classes) for i in range(n)]


def test_registered_as_a_cli_command():
    assert "convert-features" in cli.COMMANDS
    assert convert_features.CONFIG is None and convert_features.HELP


def test_tsv_with_a_bad_line_fails_or_is_skipped(tmp_path, capsys):
    records = make(3, 0, classes=None)
    lines = [classic_tsv_line(r) for r in records]
    lines.insert(1, tsv_line("bad", 10, 10, 2, "@@@@", "AAAA"))
    (tmp_path / "f.tsv").write_text("".join(lines))
    assert run([str(tmp_path / "f.tsv"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'f.tsv'}, record 'bad' (line 2), field 'boxes': expected base64 text" in err
    assert not (tmp_path / "out/index.json").exists()
    assert run([str(tmp_path / "f.tsv"), "--out", str(tmp_path / "out"), "--skip-bad", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert "wrote 3 records in 1 shards" in out and "skipped 1 malformed record:" in out
    shards = FeatureShards(tmp_path / "out")
    for record in records:
        assert_same(shards[record.image_id], record)


def test_json_folder_and_deflated_zip(tmp_path, capsys):
    folder, zipped = make(2, 1), make(2, 2)
    (tmp_path / "dir/nested").mkdir(parents=True)
    (tmp_path / "dir/a.json").write_bytes(region_json_bytes(folder[0]))
    (tmp_path / "dir/nested/b.json").write_bytes(region_json_bytes(folder[1]))
    with zipfile.ZipFile(tmp_path / "more.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for r in zipped:
            zf.writestr(f"frcnn/{r.image_id}.json", region_json_bytes(r))
    argv = [str(tmp_path / "dir"), str(tmp_path / "more.zip"), "--out", str(tmp_path / "out"), "--max-boxes", "2"]
    assert run(argv + ["--dtype", "float32"]) == 0
    assert "truncated_records: 2" in capsys.readouterr().out  # the 3-box record of each input keeps its first 2
    shards = FeatureShards(tmp_path / "out")
    assert list(shards.image_ids) == [r.image_id for r in folder + zipped]
    got = shards[zipped[1].image_id]
    np.testing.assert_array_equal(got.features, zipped[1].features[:2])
    np.testing.assert_array_equal(got.classes, zipped[1].classes[:2])


def test_cc_jsonl_converts_each_frcnn_reference_once_keyed_by_its_spec(tmp_path, capsys):
    records = make(3, 3)
    with zipfile.ZipFile(tmp_path / "train_frcnn.0.zip", "w", zipfile.ZIP_STORED) as zf:
        for r in records:
            zf.writestr(f"train_frcnn/{r.image_id}.json", region_json_bytes(r))
    specs = [f"train_frcnn.0.zip@/train_frcnn/{r.image_id}.json" for r in records]
    lines = [{"image": f"img.zip@/{i}.jpg", "caption": ["a", "b"], "frcnn": spec} for i, spec in enumerate(specs)]
    lines.append({"image": "img.zip@/0b.jpg", "caption": "another caption of image 0", "frcnn": specs[0]})
    lines.append({"image": "img.zip@/9.jpg", "caption": "no features"})
    lines.append({"image": "img.zip@/8.jpg", "caption": "missing member", "frcnn": "train_frcnn.0.zip@/nope.json"})
    (tmp_path / "cc").mkdir()
    (tmp_path / "cc/train_frcnn.json").write_text("".join(json.dumps(o) + "\n" for o in lines))
    argv = [str(tmp_path / "cc/train_frcnn.json"), "--root", str(tmp_path), "--out", str(tmp_path / "out")]
    assert run(argv) == 2
    assert "no member 'nope.json' in archive" in capsys.readouterr().err
    assert run(argv + ["--skip-bad", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert "wrote 3 records" in out and "captions_without_frcnn: 1" in out and "skipped 1 malformed record" in out
    shards = FeatureShards(tmp_path / "out")
    assert list(shards.image_ids) == specs
    for spec, record in zip(specs, records, strict=True):
        got = shards[spec]
        assert (got.boxes.shape, got.image_w) == (record.boxes.shape, record.image_w)
        np.testing.assert_array_equal(got.features, record.features)


def test_unknown_input_kind_and_nothing_valid(tmp_path, capsys):
    (tmp_path / "x.csv").write_text("a,b\n")
    assert run([str(tmp_path / "x.csv"), "--out", str(tmp_path / "out")]) == 2
    assert "unknown input kind" in capsys.readouterr().err
    (tmp_path / "bad.tsv").write_text("only\ttwo\n")
    assert run([str(tmp_path / "bad.tsv"), "--out", str(tmp_path / "out"), "--skip-bad"]) == 2
    assert "no valid records to convert" in capsys.readouterr().err
