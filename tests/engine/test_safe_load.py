"""Weights-only reading (model/safe_load.py): a pickled payload never runs, damaged and changed files are errors that
name the file, and the manifest is checked before a byte is unpickled."""

import os
import subprocess
import sys

import pytest
import torch

from vlbert_fast.model.safe_load import (
    FORCE_WEIGHTS_ONLY,
    FileDigest,
    WeightsFileError,
    digest,
    load_safetensors_file,
    load_torch_file,
    verify,
    weights_only_everywhere,
)


class Payload:
    """Unpickling calls os.system(f"touch {marker}") (what an attacker's checkpoint would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def poisoned(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.ones(3), "extra": Payload(marker)}, path)
    return path, marker


def test_a_pickled_payload_is_refused_and_never_runs(poisoned):
    path, marker = poisoned
    with pytest.raises(WeightsFileError, match=rf"{path}: refused: it holds objects beyond plain weights.*system"):
        load_torch_file(path)
    assert not marker.exists()


def test_third_party_weights_only_false_is_forced_weights_only(poisoned):
    path, marker = poisoned
    with pytest.raises(Exception, match="Weights only load failed"), weights_only_everywhere():
        torch.load(path, weights_only=False)  # what DeepSpeed's own loaders do
    assert not marker.exists()
    assert FORCE_WEIGHTS_ONLY not in os.environ  # restored after the block


def test_plain_weights_load(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"a": torch.arange(4.0), "meta": {"step": 3, "name": "x", "shape": torch.Size([2, 2])}}, path)
    got = load_torch_file(path)
    assert torch.equal(got["a"], torch.arange(4.0)) and got["meta"] == {"step": 3, "name": "x", "shape": (2, 2)}


def test_a_truncated_file_names_itself(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"a": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(WeightsFileError, match=rf"{path}: not a readable torch file \(truncated or damaged\?\)"):
        load_torch_file(path)
    with pytest.raises(WeightsFileError, match=rf"{tmp_path / 'absent.pt'}: no such file"):
        load_torch_file(tmp_path / "absent.pt")


def test_manifest_checks_come_before_unpickling(poisoned, tmp_path):
    path, marker = poisoned
    entry = digest(path)
    verify(path, entry)  # as saved: fine
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(WeightsFileError, match=rf"{path}: truncated: {entry.size - 10} bytes, the manifest says"):
        load_torch_file(path, expected=entry)
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(WeightsFileError, match="changed since it was saved: its sha256 differs"):
        load_torch_file(path, expected=entry)
    path.write_bytes(data + b"x")
    with pytest.raises(WeightsFileError, match="changed since it was saved: .* bytes, the manifest says"):
        load_torch_file(path, expected=entry)
    path.unlink()
    with pytest.raises(WeightsFileError, match=rf"{path}: missing"):
        load_torch_file(path, expected=entry)
    assert not marker.exists()
    with pytest.raises(WeightsFileError, match="a manifest entry must be"):
        FileDigest.from_dict({"size": 3}, "checkpoint.json")


def test_a_damaged_safetensors_file_names_itself(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({"a": torch.zeros(64)}, str(path))
    assert torch.equal(load_safetensors_file(path)["a"], torch.zeros(64))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(WeightsFileError, match=rf"{path}: not a readable safetensors file"):
        load_safetensors_file(path)


def test_a_nested_weights_only_load_leaves_the_outer_allowlist(tmp_path):
    """DeepSpeed's universal loader reads some files itself (torch.load inside weights_only_everywhere) after files read
    through our loader; the inner read must not take DeepSpeed's bookkeeping classes off the outer allowlist (it did:
    a resumed universal checkpoint was refused for its LossScaler)."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler

    from vlbert_fast.model.safe_load import load_torch_file, weights_only_everywhere

    path = tmp_path / "scaler.pt"
    torch.save({"scaler": LossScaler(1.0), "w": torch.ones(2)}, path)
    before = list(torch.serialization.get_safe_globals())
    with weights_only_everywhere():
        assert isinstance(load_torch_file(path)["scaler"], LossScaler)  # ours, nested
        assert isinstance(torch.load(path, weights_only=False)["scaler"], LossScaler)  # DeepSpeed's, after it
    assert set(map(id, torch.serialization.get_safe_globals())) == set(map(id, before))  # none left allowed after it


@pytest.mark.skipif(torch.cuda.is_available(), reason="DeepSpeed finds the GPU by itself")
def test_reading_deepspeed_files_on_a_cpu_machine_prints_no_accelerator_warning():
    """The first DeepSpeed import of an offline command (export, evaluate, attention maps) comes from the allowlist;
    without a GPU, DeepSpeed warned on every such command that it was falling back to its CPU accelerator."""
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    code = "from vlbert_fast.model.safe_load import allowed_globals; print(len(allowed_globals()))"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "4", result.stderr
    assert "Setting accelerator to CPU" not in result.stdout + result.stderr
