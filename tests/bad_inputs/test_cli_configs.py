"""Bad-input matrix, the command line and the configs: every unusable config, file or directory exits with code 2 and
one message that names the file (and the record, field, expected and found where there is one), never a traceback;
where a command has a skip mode, the bad record is counted once and the command completes. Commands that start no
process group run in this process; `pretrain` and `finetune` run as `python -m vlbert_fast` (matrix.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vlbert_fast.cli import main
from vlbert_fast.config import ConfigError, RunConfig, load_config

from ..shared import run_cli
from .matrix import Case, check_strict, strict_params
from .test_readers import b64, tsv_fields

# ----------------------------------------------------------------------------------------------------------------------
# configs: the message names the file (or the command line), the key, what was expected and what was found


def config_case(id_: str, yaml_text: str | None, overrides: list[str], expect: list[str]) -> Case:
    def make(tmp: Path, world: Path) -> Path:
        path = tmp / "run.yaml"
        if yaml_text is not None:
            path.write_text(yaml_text)
        return path

    def read(path: Path, counter) -> list:
        return [load_config(RunConfig, [path], overrides)]

    return Case(f"config-{id_}", make, read, expect, error=ConfigError, skip_good=None)


CONFIGS = [
    config_case(
        "unknown_key", "model:\n  hiden_size: 64\n", [], ["unknown key 'model.hiden_size'", "'model.hidden_size'"]
    ),
    config_case("wrong_type", "train:\n  max_steps: many\n", [], ["train.max_steps: expected int, found str 'many'"]),
    config_case("bad_value", "engine:\n  zero_stage: 4\n", [], ["engine: zero_stage must be 0, 1, 2 or 3, found 4"]),
    config_case(
        "bad_choice",
        "data:\n  on_bad_record: ignore\n",
        [],
        ["on_bad_record must be 'raise' or 'skip', found 'ignore'"],
    ),
    config_case("not_yaml", "model: [1, 2\n", [], ["not valid YAML"]),
    config_case("missing_file", None, [], ["does not exist"]),
    Case(
        "config-command_line_value",
        lambda tmp, world: Path("command line"),
        lambda path, counter: [load_config(RunConfig, [], ["engine.max_nonfinite_steps=0"])],
        ["engine: max_nonfinite_steps must be >= 1, found 0"],
        error=ConfigError,
        skip_good=None,
    ),
]


@pytest.mark.parametrize("case", strict_params(CONFIGS))
def test_config_errors_name_the_file_key_and_values(case, tmp_path, small_world):
    check_strict(case, tmp_path, small_world)


# ----------------------------------------------------------------------------------------------------------------------
# commands in this process


def refused(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err


def test_export_and_evaluate_of_a_directory_without_a_checkpoint(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = refused(capsys, ["export", str(tmp_path / "empty"), str(tmp_path / "out")])
    assert f"{tmp_path / 'empty'}: no complete checkpoint found" in err
    err = refused(capsys, ["evaluate", str(tmp_path / "empty")])
    assert f"{tmp_path / 'empty'}: no complete checkpoint found" in err


def test_a_config_value_on_the_command_line(capsys):
    err = refused(capsys, ["pretrain", "model.hidden_size=abc"])
    assert "config error: command line: model.hidden_size: expected int, found str 'abc'" in err


def test_attention_maps_with_captions_that_do_not_pair_with_images(small_world, tmp_path, capsys):
    args = ["attention-maps", "--out", str(tmp_path), "--image-id", "a", "--image-id", "b", "--caption", "x"]
    err = refused(capsys, [*args, f"data.root={small_world}"])
    assert "got 1 --caption for 2 --image-id" in err


def test_convert_features_strict_then_skip_counts_what_it_reports(tmp_path, capsys):
    lines = ["\t".join(tsv_fields(i)) for i in ("a", "b", "c")]
    lines[1] = "\t".join(tsv_fields("b", features=b64(np.full((2, 8), np.nan))))
    (tmp_path / "f.tsv").write_text("\r\n".join(lines) + "\r\n")
    argv = ["convert-features", str(tmp_path / "f.tsv"), "--out", str(tmp_path / "out")]
    err = refused(capsys, argv)
    assert f"{tmp_path / 'f.tsv'}, record 'b' (line 2), field 'features': expected finite values, found nan" in err
    assert main([*argv, "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "wrote 2 records" in out and "  skipped: 1\n" in out and "skipped 1 malformed record:" in out


def test_convert_features_of_a_missing_input(tmp_path, capsys):
    err = refused(capsys, ["convert-features", str(tmp_path / "absent.tsv"), "--out", str(tmp_path / "out")])
    assert f"{tmp_path / 'absent.tsv'}: no such file or directory" in err


# ----------------------------------------------------------------------------------------------------------------------
# training commands, in their own process


def data_root(tmp: Path, world: Path) -> Path:
    """A copy of the small world's files a pretraining run reads."""
    root = tmp / "data"
    shutil.copytree(world, root)
    return root


def cli_refused(args: list[str], cache: Path) -> str:
    result = run_cli(args, cache, timeout=900)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr


TINY = [
    "model.hidden_size=16",
    "model.num_hidden_layers=1",
    "model.num_attention_heads=2",
    "model.intermediate_size=32",
]


def test_pretrain_refuses_a_malformed_caption_record_a_bad_vocabulary_and_a_missing_root(small_world, tmp_path):
    root = data_root(tmp_path, small_world)
    common = ["pretrain", f"data.root={root}", f"run_dir={tmp_path / 'run'}", "train.max_steps=1", *TINY]
    captions = root / "cc_train.jsonl"
    lines = captions.read_text().splitlines()
    lines[2] = json.dumps({"image": "x.png", "caption": 42})
    captions.write_text("\n".join(lines) + "\n")
    err = cli_refused(common, tmp_path / "cache")
    assert f"{captions}, record 2 (line 3), field 'caption': expected a list of strings or a string, found 42" in err

    shutil.copy(small_world / "cc_train.jsonl", captions)
    vocab = root / "tokenizer" / "vocab.txt"
    vocab.write_bytes(vocab.read_bytes() + b"caf\xe9\n")
    err = cli_refused(common, tmp_path / "cache")
    assert f"{vocab}, line" in err and "expected UTF-8 text (one token per line), found byte b'\\xe9'" in err

    err = cli_refused([*common[:1], f"data.root={tmp_path / 'nowhere'}", *common[2:]], tmp_path / "cache")
    assert f"data.root {tmp_path / 'nowhere'} is not a directory" in err


def test_finetune_refuses_a_malformed_questions_file(tmp_path, small_world):
    root = tmp_path / "vqa"
    root.mkdir()
    for name in ("tokenizer", "features"):
        shutil.copytree(small_world / name, root / name)
    questions = root / "v2_OpenEnded_mscoco_train2014_questions.json"
    questions.write_text(json.dumps({"questions": [{"question_id": 1, "image_id": "7", "question": "what?"}]}))
    answers = [{"answer": "red", "answer_id": i + 1} for i in range(10)]
    annotations = {"annotations": [{"question_id": 1, "image_id": 7, "answers": answers}]}
    (root / "v2_mscoco_train2014_annotations.json").write_text(json.dumps(annotations))
    args = ["finetune", "--task", "vqa", f"vqa.root={root}", "init_from=", f"run_dir={tmp_path / 'run'}", *TINY]
    err = cli_refused(args, tmp_path / "cache")
    assert f"{questions}, record 0, field 'image_id': expected a int, found '7'" in err


def test_too_few_captions_and_an_empty_corpus_name_their_file(small_world, tmp_path):
    from vlbert_fast.data.pretrain_loader import DataConfigError, build_pretrain_data

    root = data_root(tmp_path, small_world)
    captions, corpus = root / "cc_train.jsonl", root / "corpus.txt"
    captions.write_text(captions.read_text().splitlines()[0] + "\n")
    cfg = load_config(RunConfig, [], [f"data.root={root}", "train.micro_batch_size=8", "model.vocab_size=1024"])
    with pytest.raises(DataConfigError, match=rf"{captions}: 1 image-text samples make no full batch of 4 rows"):
        build_pretrain_data(cfg)
    shutil.copy(small_world / "cc_train.jsonl", captions)
    corpus.write_bytes(b"\n  \n\xff\xfe\n")
    skip = load_config(RunConfig, [], [f"data.root={root}", "data.on_bad_record=skip", "model.vocab_size=1024"])
    with pytest.raises(DataConfigError, match=rf"{corpus}: the text-only corpus has no text line \(1 malformed lines"):
        build_pretrain_data(skip)
