"""The kernel developer's loop: the check compares every backend with the fp64 reference and fails a wrong one;
`--op NAME` sweeps the op's launch configurations and prints the table; a bad --op is an error that lists the ops."""

import json

import pytest
import torch

from benchmarks import harness, kernel_loop
from vlbert_fast.ops import REGISTRY
from vlbert_fast.ops.dispatch import Backend, Op

from .runner import main


def scaled_op(error: float) -> Op:
    """x * w with a "triton" backend that is off by `error` (relative) and one that cannot run."""
    reference = lambda x, w: x * w  # noqa: E731
    return Op(
        "scaled",
        [
            Backend("triton", lambda x, w: x * w * (1 + error), lambda x, w: []),
            Backend("native", reference, lambda x, w: ["no extension here"]),
            Backend("reference", reference, lambda x, w: []),
        ],
    )


def scaled_cases(device, smoke, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 3, generator=g).requires_grad_(True)
    w = torch.randn(3, generator=g).requires_grad_(True)
    return [kernel_loop.CheckCase("scaled", "5x3 float32", (x, w), {}, {"x": x, "w": w})]


def test_a_right_backend_passes_a_wrong_one_fails_and_an_unfit_one_is_skipped(monkeypatch, capsys):
    monkeypatch.setitem(kernel_loop.CASES, "scaled", scaled_cases)
    monkeypatch.setitem(REGISTRY, "scaled", scaled_op(1e-7))  # float32 rounding: within 4 eps
    assert kernel_loop.check("scaled", torch.device("cpu"), smoke=True, seed=3)
    out = capsys.readouterr().out
    assert "seed 3" in out and "skipped: no extension here" in out and "FAIL" not in out
    monkeypatch.setitem(REGISTRY, "scaled", scaled_op(1e-4))
    assert not kernel_loop.check("scaled", torch.device("cpu"), smoke=True, seed=3)
    lines = [line for line in capsys.readouterr().out.splitlines() if " triton " in line]
    assert lines and all(line.endswith("FAIL") for line in lines)


def test_results_carry_the_worst_gradient_and_its_bound(monkeypatch):
    monkeypatch.setitem(REGISTRY, "scaled", scaled_op(1e-3))
    results = {r.backend: r for r in kernel_loop.check_case(scaled_cases(None, True, 0)[0])}
    triton = results["triton"]
    assert triton.forward == pytest.approx(1e-3, rel=1e-3)
    assert triton.grad_name in ("x", "w") and triton.grad > triton.grad_bound and not triton.ok
    assert results["reference"].ok and results["native"].skipped


def test_real_ops_pass_their_check_under_the_interpreter(capsys):
    assert kernel_loop.check("box_geometry_embedding", torch.device("cpu"), smoke=True, seed=11)
    assert kernel_loop.check("roi_align", torch.device("cpu"), smoke=True, seed=11)
    out = capsys.readouterr().out
    assert out.count(" ok") >= 5  # native, triton and reference on roi_align, triton and reference on geometry


def test_op_loop_sweeps_launch_configs_and_prints_the_table(tmp_path, capsys):
    args = ["bench", "kernels", "--op", "box_geometry_embedding", "--check", "--seed", "4", "--smoke"]
    assert main([*args, "--compile-backend", "eager", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "check box_geometry_embedding" in out and "sweep box_geometry_embedding: median ms" in out
    table = out.split("sweep box_geometry_embedding")[1]
    for label in ("tile=2048", "tile=4096", "tile=8192"):
        assert f"  {label} " in table
    rows = harness.read_rows(tmp_path / "geometry.csv")
    assert {json.loads(r["config_json"])["block_config"] for r in rows} == {"tile=2048", "tile=4096", "tile=8192"}


def test_patched_restores_the_module_attribute():
    import vlbert_fast.kernels.roi_align as module

    before = module.MAX_BLOCK_C
    with harness.patched({"vlbert_fast.kernels.roi_align.MAX_BLOCK_C": 16}, "small"):
        assert module.MAX_BLOCK_C == 16
    assert module.MAX_BLOCK_C == before


def test_an_unknown_op_is_an_error_listing_the_known_ones(tmp_path, capsys):
    assert main(["bench", "kernels", "--op", "no_such_op", "--smoke", "--out", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert "--op no_such_op: neither an op nor measured by a kernel benchmark" in out
    known = out.split("(known: ", 1)[1].rstrip(")\n").split(", ")
    assert known == sorted(known)  # listed in order, each once
    assert {"box_geometry_embedding", "fused_embedding", "roi_align", "varlen_attention"} <= set(known)
