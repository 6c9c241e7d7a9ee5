"""The command line: `vlbert-fast` and `python -m vlbert_fast`, config printing and errors, synth, env."""

import pathlib
import subprocess
import sys

import yaml

from vlbert_fast.cli import main


def test_print_config_resolves_files_and_overrides(capsys):
    assert main(["config", "--config", "configs/model/base.yaml", "model.num_hidden_layers=3"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["hidden_size"] == 768 and printed["model"]["num_hidden_layers"] == 3


def test_config_resolves_every_shipped_config(capsys):
    """Pretraining, every fine-tuning config (which pretraining's root would refuse: 'task'), the ZeRO templates over
    either, and a task named on the command line (from its embedded default)."""
    root = pathlib.Path(__file__).resolve().parents[1] / "configs"
    for path in sorted(root.glob("*/*.yaml")):
        assert main(["config", "--config", str(path)]) == 0, path
        printed = yaml.safe_load(capsys.readouterr().out)
        assert ("task" in printed) == (path.parent.name == "finetune"), path
    zero = str(root / "zero" / "zero3.yaml")
    assert main(["config", "--config", str(root / "finetune" / "vqa_base_4x16G_fp32.yaml"), "--config", zero]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["task"] == "vqa" and printed["engine"]["zero_stage"] == 3 and printed["train"]["lr"] == 1.6e-4
    assert main(["config", "--task", "refcoco", "train.epochs=2"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["task"] == "refcoco" and printed["train"]["epochs"] == 2
    assert main(["config", "task=bogus"]) == 2
    assert "task must be one of" in capsys.readouterr().err


def test_config_error_is_a_message_and_exit_code_2(capsys):
    assert main(["pretrain", "model.hiddn_size=4"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'model.hiddn_size'; did you mean 'model.hidden_size'" in err


def test_help_config_lists_documented_fields(capsys):
    assert main(["pretrain", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert "model.hidden_size: int = 128" in out and "Width H of the transformer" in out


def test_synth_command_writes_a_world(tmp_path, capsys):
    out = tmp_path / "world"
    assert main(["synth", "--out", str(out), "train_images=6", "val_images=2", "corpus_lines=4"]) == 0
    assert "wrote" in capsys.readouterr().out and (out / "world.json").is_file()
    assert main(["synth", "--out", str(out)]) == 2  # never overwrites
    assert "exists" in capsys.readouterr().err


def test_module_entry_point_and_env():
    result = subprocess.run([sys.executable, "-m", "vlbert_fast", "env"], capture_output=True, text=True, check=True)
    assert "box_geometry_embedding: auto -> reference" in result.stdout
    assert "torch" in result.stdout
