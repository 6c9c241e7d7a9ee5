"""Compile every Triton kernel for a CUDA GPU without one (the CPU wheel of Triton ships the NVIDIA backend and
ptxas), and report each kernel's registers and spills as ptxas sees them. The interpreter runs kernels as NumPy and
accepts code the compiler rejects; this catches that on a CPU machine.

    TRITON_INTERPRET=0 python -m tests.kernels.cuda_codegen [--arch 90] [--hidden 1024] [--geometry-block 16 256]

Prints one JSON object per kernel configuration: kernel, config, registers, spill_bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from vlbert_fast.kernels import embedding, geometry, scatter
from vlbert_fast.kernels.utils import accumulating_row_warps, row_warps

INDEX_ARGS = ("word_ids_ptr", "position_ids_ptr", "type_ids_ptr", "kind_ptr", "visual_index_ptr")


def embedding_type(name: str, dtype: str = "bf16") -> str:
    if name in INDEX_ARGS:
        return "*i64"
    if name == "region_masked_ptr":
        return "*u8"
    if name == "partial_ptr" or (name.startswith("grad_") and name != "grad_out_ptr"):
        return "*fp32"
    if name.endswith("_ptr"):
        return "*" + dtype
    if name in ("eps", "dropout_p", "dropout_scale"):
        return "fp32"
    return "i64" if name in ("seed", "rng_offset") else "i32"


def compile_one(fn, types, constexprs: dict, num_warps: int, arch: int) -> dict:
    signature = {name: "constexpr" if name in constexprs else types(name) for name in fn.arg_names}
    source = ASTSource(fn, signature, constexprs)
    kernel = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
    ptx = kernel.asm["ptx"]
    target = re.search(r"^\.target (\S+)", ptx, re.M).group(1)
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        report = subprocess.run(
            [ptxas, f"-arch={target}", "-v", path, "-o", os.devnull], capture_output=True, text=True, check=True
        ).stderr
    registers = int(re.search(r"Used (\d+) registers", report).group(1))
    spills = sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", report))
    return {"registers": registers, "spill_bytes": spills}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--geometry-block", type=int, nargs=2, default=(16, 256), metavar=("BLOCK_M", "BLOCK_F"))
    args = parser.parse_args()
    block = triton.next_power_of_2(args.hidden)
    bwd = embedding._fused_embedding_bwd_kernel
    block_m, block_f = args.geometry_block
    geometry_types = {"out_ptr": "*bf16", "grad_out_ptr": "*bf16"}
    cases = [
        (embedding._fused_embedding_fwd_kernel, embedding_type, {"HAS_DROPOUT": True}, row_warps(block)),
        (bwd, embedding_type, {"HAS_DROPOUT": True, "DETERMINISTIC": False}, accumulating_row_warps(block)),
        (bwd, embedding_type, {"HAS_DROPOUT": False, "DETERMINISTIC": True}, accumulating_row_warps(block)),
        (
            scatter._segment_sum_kernel,
            lambda n: "*fp32" if n in ("out_ptr", "rows_ptr") else ("*i64" if n.endswith("_ptr") else "i32"),
            {},
            row_warps(block),
        ),
    ]
    for fn, types, constexprs, warps in cases:
        constexprs = {"BLOCK_H": block, **constexprs, **({"TYPE_ROWS": 4} if fn is bwd else {})}
        result = compile_one(fn, types, constexprs, warps, args.arch)
        print(json.dumps({"kernel": fn.__name__, "config": {**constexprs, "num_warps": warps}, **result}))
    for fn in (geometry._box_geometry_fwd_kernel, geometry._box_geometry_bwd_kernel):
        constexprs = {"BLOCK_M": block_m, "BLOCK_F": block_f}
        types = lambda n: geometry_types.get(n, "*fp32" if n.endswith("_ptr") else "i32")  # noqa: E731
        result = compile_one(fn, types, constexprs, 4, args.arch)
        print(json.dumps({"kernel": fn.__name__, "config": {**constexprs, "num_warps": 4}, **result}))


if __name__ == "__main__":
    main()
