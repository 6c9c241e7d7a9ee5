"""The attention and fused encoder kernels compile for an H100 (sm_90) on this CPU machine, in every autotune config
the GPU would try, and the main ones fit their registers. The interpreter accepts code the compiler rejects; this
catches that without a GPU. Also a module: `TRITON_INTERPRET=0 python -m tests.kernels.test_attention_codegen`
prints registers and spills of every config (what kernels/utils.py's choices rest on).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import triton

PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
ROOT = Path(__file__).resolve().parents[2]


def attention_type(name: str, dtype: str = "bf16") -> str:
    if name in ("lse_ptr", "delta_ptr"):
        return "*fp32"
    if name == "cu_seqlens_ptr":
        return "*i32"
    if name.endswith("_ptr"):
        return "*" + dtype
    if name in ("qk_scale", "softmax_scale", "dropout_p", "dropout_scale"):
        return "fp32"
    return "i64" if name in ("seed", "rng_offset") else "i32"


def fused_type(name: str) -> str:
    if name in ("mean_ptr", "rstd_ptr", "partial_ptr", "loss_ptr"):
        return "*fp32"
    if name == "labels_ptr":
        return "*i64"
    if name.endswith("_ptr"):
        return "*bf16"
    if name in ("eps", "dropout_p", "dropout_scale"):
        return "fp32"
    return "i64" if name in ("seed", "rng_offset") else "i32"


def cases(quick: bool):
    """(kernel, types, constexprs, num_warps, num_stages) to compile."""
    from vlbert_fast.kernels import attention, cross_entropy, gelu, layer_norm
    from vlbert_fast.kernels.utils import attention_configs

    head_dims = (64,) if quick else (64, 128)
    for kind, kernels in (("fwd", [attention._attn_fwd_kernel]),
                          ("bwd", [attention._attn_bwd_dkdv_kernel, attention._attn_bwd_dq_kernel])):  # fmt: skip
        configs = attention_configs(kind)
        for config in configs[:1] if quick else configs:
            for kernel in kernels:
                for head_dim in head_dims:
                    for dropout in (False, True):
                        constexprs = {**config.kwargs, "BLOCK_D": head_dim, "HAS_DROPOUT": dropout,
                                      "DOT_PRECISION": "tf32"}  # fmt: skip
                        yield kernel.fn, attention_type, constexprs, config.num_warps, config.num_stages
    yield attention._attn_bwd_preprocess_kernel, attention_type, {"BLOCK_T": 64, "BLOCK_D": 64}, 4, 1
    yield layer_norm._bdrln_fwd_kernel, fused_type, {"ROWS": 4, "BLOCK_H": 1024, "HAS_BIAS": True,
                                                     "HAS_DROPOUT": True}, 8, 1  # fmt: skip
    yield layer_norm._bdrln_bwd_kernel, fused_type, {"ROWS": 4, "BLOCK_H": 1024, "HAS_DROPOUT": True}, 8, 1
    yield gelu._bias_gelu_fwd_kernel, fused_type, {"ROWS": 2, "BLOCK_C": 1024}, 8, 1
    yield gelu._bias_gelu_bwd_kernel, fused_type, {"ROWS": 2, "BLOCK_C": 1024}, 8, 1
    yield cross_entropy._cross_entropy_fwd_bwd_kernel, fused_type, {"BLOCK_V": 4096}, 8, 1


def main(argv: list[str] | None = None) -> int:
    quick = "--quick" in (argv if argv is not None else sys.argv[1:])
    for fn, types, constexprs, warps, stages in cases(quick):
        result = compile_kernel(fn, types, constexprs, warps, stages)
        print(json.dumps({"kernel": fn.__name__, "config": {**constexprs, "num_warps": warps, "num_stages": stages},
                          **result}), flush=True)  # fmt: skip
    return 0


def compile_kernel(fn, types, constexprs: dict, warps: int, stages: int, arch: int = 90) -> dict:
    """Compiles for sm_`arch` and reads ptxas's registers and spill bytes (tests/kernels/cuda_codegen.py's
    compile_one, with the pipeline depth the attention configs set)."""
    import re
    import tempfile

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {name: "constexpr" if name in constexprs else types(name) for name in fn.arg_names}
    kernel = triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", arch, 32),
                            options={"num_warps": warps, "num_stages": stages})  # fmt: skip
    ptx = kernel.asm["ptx"]
    target = re.search(r"^\.target (\S+)", ptx, re.M).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        Path(path).write_text(ptx)
        report = subprocess.run([str(PTXAS), f"-arch={target}", "-v", path, "-o", os.devnull], capture_output=True,
                                text=True, check=True).stderr  # fmt: skip
    registers = int(re.search(r"Used (\d+) registers", report).group(1))
    spills = sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", report))
    return {"registers": registers, "spill_bytes": spills}


@pytest.mark.slow
@pytest.mark.skipif(not PTXAS.exists(), reason="this Triton install has no NVIDIA backend (ptxas)")
def test_kernels_compile_for_sm90():
    env = {**os.environ, "TRITON_INTERPRET": "0"}  # compile for real: the interpreter is set for this process
    command = [sys.executable, "-m", "tests.kernels.test_attention_codegen", "--quick"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert {r["kernel"] for r in results} == {
        "_attn_fwd_kernel", "_attn_bwd_dkdv_kernel", "_attn_bwd_dq_kernel", "_attn_bwd_preprocess_kernel",
        "_bdrln_fwd_kernel", "_bdrln_bwd_kernel", "_bias_gelu_fwd_kernel", "_bias_gelu_bwd_kernel",
        "_cross_entropy_fwd_bwd_kernel",
    }  # fmt: skip
    for r in results:
        assert r["registers"] <= 255, r
        if not r["kernel"].startswith("_attn_") or r["kernel"] == "_attn_bwd_preprocess_kernel":
            assert r["spill_bytes"] == 0, r  # the row kernels at BERT-Large's width fit in registers
    forward = [r for r in results if r["kernel"] == "_attn_fwd_kernel" and not r["config"]["HAS_DROPOUT"]]
    assert forward and forward[0]["spill_bytes"] == 0, forward  # FlashAttention-2's own 128 x 64 tile, head dim 64


if __name__ == "__main__":
    raise SystemExit(main())
