"""`vlbert-fast attention-maps --checkpoint RUN` on the two runs whose model-states file does not hold the weights: a
ZeRO-3 run (2 ranks: the parameters exist only as shards, the module file holds empty tensors) and a bf16 run (its
module file holds bf16-rounded weights; the fp32 masters are in the optimizer state). The maps must be those of the
consolidated fp32 weights (`from_pretrained`, which test_zero_stages ties to the trained engine's outputs), not of
what the module file holds."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from vlbert_fast.config import RunConfig, load_config
from vlbert_fast.data import collate
from vlbert_fast.model.attention_heatmaps import attention_probs, build_samples
from vlbert_fast.model.checkpoint_dir import find_checkpoint
from vlbert_fast.model.pretrained import from_pretrained

from .helpers import pretrain_args, python_module, torchrun

pytestmark = pytest.mark.slow  # two tiny runs (2 ranks ZeRO-3, 1 rank bf16) of 8 steps


def maps_of_the_consolidated_model(run_dir: Path, env: dict) -> np.ndarray:
    os.environ["VLBERT_FAST_CACHE"] = env["VLBERT_FAST_CACHE"]  # the run's synthetic world (resolve_root)
    cfg = load_config(RunConfig, [run_dir / "config.yaml"])
    _, _, [(_, _, example)] = build_samples(cfg, [], [])
    model = from_pretrained(run_dir).eval()
    return np.stack([p[0] for p in attention_probs(model, collate([example]))])


def module_file_state(run_dir: Path) -> dict[str, torch.Tensor]:
    """What rank 0's model-states file holds (`mp_rank_00_...`; under ZeRO-3 `zero_pp_rank_0_mp_rank_00_...`)."""
    tag_dir = find_checkpoint(run_dir / "checkpoints")
    (path,) = [p for p in tag_dir.glob("*model_states.pt") if p.name.split("mp_rank_")[0] in ("", "zero_pp_rank_0_")]
    states = torch.load(path, map_location="cpu", weights_only=False)  # our own run, read to show what it holds
    return {k.removeprefix("module."): v for k, v in states["module"].items()}


@pytest.mark.parametrize("case", ["zero3-2ranks", "bf16-1rank"])
def test_attention_maps_read_the_consolidated_weights(case, tiny_config, ds_env, tmp_path, monkeypatch):
    monkeypatch.setenv("VLBERT_FAST_CACHE", ds_env["VLBERT_FAST_CACHE"])
    run_dir = tmp_path / "run"
    if case == "zero3-2ranks":
        template = Path(__file__).parents[2] / "configs" / "zero" / "zero3.yaml"
        result = torchrun(pretrain_args(tiny_config, run_dir, "--config", str(template)), ds_env)
    else:
        result = python_module(pretrain_args(tiny_config, run_dir, "train.precision=bf16"), ds_env)
    assert result.returncode == 0, result.tail()

    out = tmp_path / "maps"
    maps = python_module(["attention-maps", "--out", str(out), "--checkpoint", str(run_dir)], ds_env)
    assert maps.returncode == 0, maps.tail()
    assert f"weights from {find_checkpoint(run_dir / 'checkpoints')}" in maps.output
    (folder,) = out.iterdir()
    got = np.load(folder / "attention.npz")["probs"]
    want = maps_of_the_consolidated_model(run_dir, ds_env)
    np.testing.assert_allclose(got, want, atol=1e-6)

    consolidated = from_pretrained(run_dir).state_dict()
    raw = module_file_state(run_dir)
    name = "vlbert.encoder.layers.0.attention.qkv.weight"
    if case == "zero3-2ranks":
        assert raw[name].numel() == 0 and consolidated[name].numel() > 0  # the module file holds no weights
    else:
        assert raw[name].dtype == torch.bfloat16
        assert not torch.equal(raw[name].float(), consolidated[name])  # the masters are not the rounded module
        assert torch.equal(consolidated[name].to(torch.bfloat16), raw[name])  # ... and round to it
