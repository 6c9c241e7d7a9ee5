"""World-size change through DeepSpeed's universal checkpoint, as the README documents it: the 2-rank ZeRO-2
reference checkpoint is converted with deepspeed.checkpoint.ds_to_universal (no --inject_missing_state needed: our
client state carries the entry it asks for), then resumed by one plain `python -m vlbert_fast pretrain` process
with engine.load_universal=true. That run saves its own checkpoint; converted in turn, it holds exactly the
universal files it was loaded from: fp32 weights, both Adam moments and the step count of every parameter."""

import argparse
import contextlib
import io

import pytest
import torch

from vlbert_fast.model.checkpoint_dir import read_marker

from .conftest import REFERENCE_OVERRIDES
from .helpers import pretrain_args, python_module

pytestmark = pytest.mark.slow  # two conversions and a 1-process launch, about 10-20 s on 2 cores


def to_universal(tag_dir, out_dir) -> None:
    from deepspeed.checkpoint.ds_to_universal import main

    args = argparse.Namespace(
        input_folder=str(tag_dir),
        output_folder=str(out_dir),
        num_extract_workers=1,
        num_merge_workers=1,
        keep_temp_folder=False,
        strict=True,
        inject_missing_state=False,
    )
    with contextlib.redirect_stdout(io.StringIO()):
        main(args)


def universal_tensors(folder) -> dict[str, object]:
    """parameter/state -> value of every file under the universal checkpoint's zero/ directory."""
    out = {}
    for path in sorted((folder / "zero").glob("*/*.pt")):
        value = torch.load(path, map_location="cpu", weights_only=False)
        out[f"{path.parent.name}/{path.stem}"] = value["param"] if isinstance(value, dict) else value
    return out


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    return a == b


def test_two_rank_zero2_checkpoint_resumes_on_one_rank(reference_run, tiny_config, ds_env, tmp_path):
    source = tmp_path / "step8_universal"
    to_universal(reference_run / "checkpoints" / "step8", source)
    loaded = universal_tensors(source)
    assert {k.split("/")[1] for k in loaded} >= {"fp32", "exp_avg", "exp_avg_sq", "step"}

    run_dir = tmp_path / "one_rank"
    args = [*REFERENCE_OVERRIDES, f"engine.resume={source}", "engine.load_universal=true"]
    refused = python_module(pretrain_args(tiny_config, run_dir, *args), ds_env)
    assert refused.returncode == 2, refused.tail()  # DeepSpeed's conversion carries no manifest of ours
    assert f"{source} has no checkpoint.json" in refused.output and "engine.trust_foreign=true" in refused.output
    result = python_module(pretrain_args(tiny_config, run_dir, *args, "engine.trust_foreign=true"), ds_env)
    assert result.returncode == 0, result.tail()
    assert "world size 1 | ZeRO-2" in result.output
    assert f"resumed from {source} at step 8" in result.output
    assert "world size 2 -> 1: data restarts at global micro batch 16 of epoch 0" in result.output
    saved = run_dir / "checkpoints" / "step8"
    assert read_marker(saved)["world_size"] == 1

    roundtrip = tmp_path / "roundtrip_universal"
    to_universal(saved, roundtrip)
    again = universal_tensors(roundtrip)
    assert again.keys() == loaded.keys()
    differing = [k for k in loaded if not same(loaded[k], again[k])]
    assert not differing, differing
