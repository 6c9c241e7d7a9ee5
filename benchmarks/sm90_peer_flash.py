"""FlashAttention-2's own CUDA kernels on the static sm_90 scorecard: what dropout costs the peer, read the same way
as ours (benchmarks/sm90_static.py), so the two stand side by side.

    python -m benchmarks.sm90_peer_flash --flash-attn DIR [--cutlass DIR] [--out DIR]

DIR is a flash-attention checkout with its submodules (git clone --recursive
https://github.com/Dao-AILab/flash-attention): its csrc/flash_attn/src headers and CUTLASS (csrc/cutlass, or
--cutlass). Nothing is downloaded. nvcc compiles one translation unit per pass, written here, that instantiates the
kernels FlashAttention-2's launchers pick at head dim 64 in bf16, non-causal, even sizes, on a GPU with at least
144 KB of shared memory per block (an H100): the forward with dropout off (128 x 128 tile, 4 warps) and on
(128 x 64, 4 warps: FA2 switches tiles for dropout), the forward at 128 x 64 without dropout (the same-tile
baseline), and the backward (one kernel for dK, dV and dQ, dQ by atomic adds; 128 x 128, 8 warps) with dropout off
and on. The SASS is compiled for sm_90 as FA2's wheels ship it for an H100 (these kernels use mma.sync there).

Rows go to sm90_peer_flash.csv with ours at the same head dim and precision (from sm90_static.csv), and a summary
to sm90_peer_flash.md. loop_instr_per_element is SASS instructions per warp in one iteration of the innermost loop,
times warps, over the elements of the score tile that iteration covers: the scorecard's definition.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import sass_metrics as sm
from .sm90_static import ATTENTION_KERNELS

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = [
    "peer", "kernel", "pass", "dropout", "config", "regs", "stack_bytes", "loop_spill_instr", "loop_instr",
    "elements", "loop_instr_per_element", "tensor_cores", "atomics", "fenced_atomics",
]  # fmt: skip
OURS_VARIANT = "hd64 S128"  # sm90_static.csv's variant with FA2's head dim and a VL-BERT length


@dataclass(frozen=True)
class PeerKernel:
    name: str  # our wrapper's name in the translation unit
    pass_: str  # "fwd" or "bwd"
    dropout: bool
    block_m: int
    block_n: int
    warps: int
    traits: str  # FA2's kernel traits, as its launcher names them for head dim 64
    why: str


PEER_KERNELS = (
    PeerKernel("peer_fwd_nodrop", "fwd", False, 128, 128, 4,
               "Flash_fwd_kernel_traits<64, 128, 128, 4, false, false, T>", "FA2's no-dropout tile"),
    PeerKernel("peer_fwd_nodrop_128x64", "fwd", False, 128, 64, 4,
               "Flash_fwd_kernel_traits<64, 128, 64, 4, false, false, T>", "the dropout tile without dropout"),
    PeerKernel("peer_fwd_drop", "fwd", True, 128, 64, 4,
               "Flash_fwd_kernel_traits<64, 128, 64, 4, false, false, T>", "FA2's dropout tile"),
    PeerKernel("peer_bwd_nodrop", "bwd", False, 128, 128, 8,
               "Flash_bwd_kernel_traits<64, 128, 128, 8, 4, 4, 4, false, false, T>", "FA2's tile (>= 144 KB smem)"),
    PeerKernel("peer_bwd_drop", "bwd", True, 128, 128, 8,
               "Flash_bwd_kernel_traits<64, 128, 128, 8, 4, 4, 4, false, false, T>", "FA2's tile (>= 144 KB smem)"),
)  # fmt: skip

# FA2's device entry points and their template flags after the traits and Is_dropout: causal, local, alibi,
# even M/N, even K, softcap (and for the forward Return_softmax).
ENTRY = {
    "fwd": ("compute_attn", "false, false, false, true, true, false, false", ("flash.h", "flash_fwd_kernel.h")),
    "bwd": ("compute_dq_dk_dv_seqk_parallel", "false, false, false, true, true, false",
            ("flash.h", "flash_bwd_preprocess_kernel.h", "flash_bwd_kernel.h")),
}  # fmt: skip
PARAMS = {"fwd": "Flash_fwd_params", "bwd": "Flash_bwd_params"}


class PeerSourceError(RuntimeError):
    """The peer's sources or the compiler are missing or do not build."""


def translation_unit(pass_: str) -> str:
    """The .cu that instantiates one pass's PEER_KERNELS: FA2's headers, and one __global__ wrapper per kernel."""
    entry, flags, headers = ENTRY[pass_]
    lines = [f"// vlbert_fast benchmarks/sm90_peer_flash.py: FlashAttention-2 {pass_} kernels for a static sm_90 look"]
    lines += [f'#include "{h}"' for h in headers]
    lines.append("using T = cutlass::bfloat16_t;")
    for k in PEER_KERNELS:
        if k.pass_ != pass_:
            continue
        lines.append(
            f"__global__ void {k.name}(__grid_constant__ const FLASH_NAMESPACE::{PARAMS[pass_]} params) {{\n"
            f"  FLASH_NAMESPACE::{entry}<{k.traits}, {str(k.dropout).lower()}, {flags}>(params);\n}}"
        )
    return "\n".join(lines) + "\n"


def _git_head(path: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, check=True)  # fmt: skip
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def sources(flash_attn: Path, cutlass: Path | None) -> tuple[Path, Path]:
    """(FA2's csrc/flash_attn/src, CUTLASS's include), or PeerSourceError naming what is missing."""
    src = flash_attn / "csrc" / "flash_attn" / "src"
    if not (src / "flash_fwd_kernel.h").is_file():
        raise PeerSourceError(
            f"{flash_attn}: no csrc/flash_attn/src/flash_fwd_kernel.h; --flash-attn must name a flash-attention "
            f"checkout (git clone --recursive https://github.com/Dao-AILab/flash-attention)"
        )
    include = (cutlass or flash_attn / "csrc" / "cutlass") / "include"
    if not (include / "cute" / "tensor.hpp").is_file():
        raise PeerSourceError(
            f"{include}: no cute/tensor.hpp; clone flash-attention with --recursive (its csrc/cutlass submodule) "
            f"or name a CUTLASS checkout with --cutlass"
        )
    return src, include


def compile_pass(pass_: str, src: Path, include: Path, workdir: Path) -> Path:
    """nvcc's sm_90 cubin of one pass's translation unit (FA2's own nvcc flags that change code generation)."""
    from torch.utils.cpp_extension import include_paths

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise PeerSourceError("nvcc is not on the PATH: the peer's CUDA kernels need it to compile")
    cu = workdir / f"peer_{pass_}.cu"
    cu.write_text(translation_unit(pass_))
    cubin = workdir / f"peer_{pass_}.cubin"
    command = [
        nvcc, "-std=c++17", "-O3", "-gencode", "arch=compute_90,code=sm_90", "--expt-relaxed-constexpr",
        "--expt-extended-lambda", "--use_fast_math", "-DNDEBUG", "-cubin", "-o", str(cubin), f"-I{src}",
        f"-I{include}", *(f"-I{p}" for p in include_paths()), str(cu),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "error" in line][:5]
        raise PeerSourceError(f"nvcc could not compile {cu.name}:\n  " + "\n  ".join(errors or [done.stderr[-800:]]))
    return cubin


def resources(cubin: Path) -> dict[str, tuple[int, int]]:
    """Function name -> (registers, stack bytes), from cuobjdump -res-usage."""
    text = subprocess.run([sm.tool("cuobjdump"), "-res-usage", str(cubin)], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip
    found = re.findall(r"Function (\S+):\s*\n\s*REG:(\d+) STACK:(\d+)", text)
    return {name: (int(reg), int(stack)) for name, reg, stack in found}


def measure_listing(listing: str, kernel: PeerKernel) -> dict:
    """The scorecard's numbers of one peer kernel from its SASS: the innermost loop is the loop over key blocks (the
    forward) or query blocks (the backward); exactly one is expected."""
    instructions, loops = sm.parse_sass(listing)
    inner = sm.innermost(loops)
    if len(inner) != 1:
        raise PeerSourceError(f"{kernel.name}: {len(inner)} innermost loops in its SASS, expected one (another FA2?)")
    body = sm.hot_path(instructions, loops, inner)
    elements = kernel.block_m * kernel.block_n
    loop_instr = sm.counted(body)
    fenced, atomics = sm.fenced_atomics(body)
    return {
        "loop_spill_instr": sm.spills(body),
        "loop_instr": loop_instr,
        "elements": elements,
        "loop_instr_per_element": round(loop_instr * kernel.warps / elements, 4),
        "tensor_cores": sm.tensor_cores(body),
        "atomics": atomics,
        "fenced_atomics": fenced,
    }


def peer_rows(src: Path, include: Path) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="sm90_peer_") as tmp, ThreadPoolExecutor(2) as pool:
        cubins = dict(zip(ENTRY, pool.map(lambda p: compile_pass(p, src, include, Path(tmp)), ENTRY), strict=True))
        rows = []
        for pass_, cubin in cubins.items():
            sass = subprocess.run([sm.tool("cuobjdump"), "-sass", str(cubin)], capture_output=True, text=True,
                                  check=True).stdout  # fmt: skip
            listings = sm.function_listings(sass)
            usage = resources(cubin)
            for k in (k for k in PEER_KERNELS if k.pass_ == pass_):
                name = next(n for n in listings if re.search(rf"\d{k.name}N", n) or n == k.name)
                regs, stack = usage[name]
                rows.append({
                    "peer": "flash_attn2", "kernel": k.name, "pass": pass_, "dropout": 0.1 if k.dropout else 0.0,
                    "config": f"BLOCK_M={k.block_m} BLOCK_N={k.block_n} w{k.warps} ({k.why})", "regs": regs,
                    "stack_bytes": stack, **measure_listing(listings[name], k),
                })  # fmt: skip
    return rows


def our_rows(card: Path) -> list[dict]:
    """Our bf16 attention kernels at head dim 64, S = 128, from the scorecard's CSV."""
    if not card.is_file():
        raise PeerSourceError(f"{card}: no scorecard to compare with; run `vlbert-fast bench static` first")
    rows = []
    with open(card, newline="") as f:
        for r in csv.DictReader(f):
            if r["variant"].startswith(OURS_VARIANT) and r["dtype"] == "bf16" and r["kernel"] in ATTENTION_KERNELS:
                block_m, block_n = (int(re.search(rf"{k}=(\d+)", r["config"]).group(1)) for k in ("BLOCK_M", "BLOCK_N"))
                rows.append({
                    "peer": "ours", "kernel": r["kernel"], "pass": r["variant"].split()[-1],
                    "dropout": float(r["dropout"]), "config": r["config"], "regs": int(r["regs"]), "stack_bytes": 0,
                    "loop_spill_instr": 0, "loop_instr": int(r["loop_instr"]),
                    "elements": block_m * block_n,
                    "loop_instr_per_element": float(r["loop_instr_per_element"]), "tensor_cores": r["tensor_cores"],
                    "atomics": int(r["atomics"]), "fenced_atomics": int(r["fenced_atomics"]),
                })  # fmt: skip
    return rows


def _per_element(rows: list[dict], peer: str, kernel: str, dropout: float, config: str = "") -> float:
    found = [r for r in rows if r["peer"] == peer and r["kernel"] == kernel and r["dropout"] == dropout
             and r["config"].startswith(config)]  # fmt: skip
    if not found:
        raise PeerSourceError(f"no {peer} row for {kernel} dropout {dropout} {config}")
    return found[0]["loop_instr_per_element"]


def summary(rows: list[dict], versions: dict[str, str]) -> str:
    """The markdown beside the CSV: dropout's cost in FA2 and in ours, per pass and per element."""

    def pe(peer, kernel, dropout, config=""):
        return _per_element(rows, peer, kernel, dropout, config)

    fa_fwd = (pe("flash_attn2", "peer_fwd_nodrop_128x64", 0.0), pe("flash_attn2", "peer_fwd_drop", 0.1))
    fa_fwd_best = pe("flash_attn2", "peer_fwd_nodrop", 0.0)
    fa_bwd = (pe("flash_attn2", "peer_bwd_nodrop", 0.0), pe("flash_attn2", "peer_bwd_drop", 0.1))
    fwd_tile, dkdv_tile = "BLOCK_M=128 BLOCK_N=64", "BLOCK_M=64 BLOCK_N=64"
    our_fwd = (pe("ours", "_attn_fwd_kernel", 0.0, fwd_tile), pe("ours", "_attn_fwd_kernel", 0.1, fwd_tile))
    our_dkdv = tuple(pe("ours", "_attn_bwd_dkdv_kernel", p, dkdv_tile) for p in (0.0, 0.1))
    lines = [
        "# FlashAttention-2 on the static sm_90 scorecard",
        "",
        f"`python -m benchmarks.sm90_peer_flash --flash-attn DIR`: flash-attention {versions['flash_attn']}, CUTLASS "
        f"{versions['cutlass']}, {versions['nvcc']}; ours from sm90_static.csv ({OURS_VARIANT}). Head dim 64, bf16, "
        "dropout 0.1 against none. Instructions per element: SASS instructions per warp in one iteration of the "
        "innermost loop x warps / score elements of that iteration (benchmarks/sm90_static.py). FA2's kernels use "
        "mma.sync on an H100, ours wgmma. Static figures: issue cost, not time.",
        "",
        "## Dropout's cost",
        "",
        "| pass | FA2 without | FA2 with | FA2 ratio | ours without | ours with | our ratio |",
        "|---|---|---|---|---|---|---|",
        f"| forward, 128 x 64 tile both | {fa_fwd[0]:.4f} | {fa_fwd[1]:.4f} | {fa_fwd[1] / fa_fwd[0]:.3f} | "
        f"{our_fwd[0]:.4f} | {our_fwd[1]:.4f} | {our_fwd[1] / our_fwd[0]:.3f} |",
        f"| forward, FA2 at its no-dropout tile (128 x 128) | {fa_fwd_best:.4f} | {fa_fwd[1]:.4f} | "
        f"{fa_fwd[1] / fa_fwd_best:.3f} | | | |",
    ]
    for dq_tile, dq_name in (("BLOCK_M=64 BLOCK_N=64", "64 x 64"), ("BLOCK_M=128 BLOCK_N=64", "128 x 64")):
        dq = (pe("ours", "_attn_bwd_dq_kernel", 0.0, dq_tile), pe("ours", "_attn_bwd_dq_kernel", 0.1, dq_tile))
        ours = (our_dkdv[0] + dq[0], our_dkdv[1] + dq[1])
        lines.append(
            f"| backward: FA2's one kernel; ours dK/dV 64 x 64 + dQ {dq_name} "
            f"| {fa_bwd[0]:.4f} | {fa_bwd[1]:.4f} | {fa_bwd[1] / fa_bwd[0]:.3f} | {ours[0]:.4f} | {ours[1]:.4f} | "
            f"{ours[1] / ours[0]:.3f} |"
        )
    dq_extra = [pe("ours", "_attn_bwd_dq_kernel", 0.1, t) - pe("ours", "_attn_bwd_dq_kernel", 0.0, t)
                for t in ("BLOCK_M=64 BLOCK_N=64", "BLOCK_M=128 BLOCK_N=64")]  # fmt: skip
    lines += [
        "",
        f"Dropout adds, per element: FA2's forward {fa_fwd[1] - fa_fwd[0]:.4f}, ours {our_fwd[1] - our_fwd[0]:.4f}; "
        f"FA2's backward {fa_bwd[1] - fa_bwd[0]:.4f}, ours {our_dkdv[1] - our_dkdv[0]:.4f} in dK/dV plus "
        f"{dq_extra[0]:.4f} (64 x 64) or {dq_extra[1]:.4f} (128 x 64) in dQ. FA2's backward draws the mask once per "
        "element for dK, dV and dQ: one kernel computes all three, adding dQ into an fp32 buffer with atomic adds "
        "(by default in an order that varies from run to run). Ours computes dQ in a kernel of its own, without "
        "atomics and reproducibly, so P and the mask are computed twice.",
        "",
        "## Rows",
        "",
        "| peer | kernel | dropout | config | regs | loop instr | instr/elem | TC | atomics |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['peer']} | {r['kernel']} | {r['dropout']} | {r['config']} | {r['regs']} | {r['loop_instr']} | "
            f"{r['loop_instr_per_element']:.4f} | {r['tensor_cores']} | {r['atomics']} |"
        )
    return "\n".join(lines) + "\n"


def _nvcc_version() -> str:
    try:
        text = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "nvcc (version unknown)"
    found = re.search(r"release ([\d.]+)", text)
    return f"nvcc {found.group(1)}" if found else "nvcc"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sm90_peer_flash", description=__doc__.splitlines()[0])
    parser.add_argument("--flash-attn", type=Path, default=os.environ.get("FLASH_ATTN_SRC"),
                        help="a flash-attention checkout (default: $FLASH_ATTN_SRC)")  # fmt: skip
    parser.add_argument("--cutlass", type=Path, help="a CUTLASS checkout (default: the checkout's csrc/cutlass)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of sm90_peer_flash.csv/.md")
    parser.add_argument("--ours", type=Path, default=RESULTS / "sm90_static.csv", help="our scorecard's CSV")
    args = parser.parse_args(argv)
    if args.flash_attn is None:
        print("error: name a flash-attention checkout with --flash-attn DIR (or $FLASH_ATTN_SRC)", file=sys.stderr)
        return 2
    try:
        src, include = sources(args.flash_attn, args.cutlass)
        ours = our_rows(args.ours)
        rows = peer_rows(src, include) + ours
        versions = {"flash_attn": _git_head(args.flash_attn), "cutlass": _git_head(include.parent),
                    "nvcc": _nvcc_version()}  # fmt: skip
        text = summary(rows, versions)
    except PeerSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "sm90_peer_flash.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (args.out / "sm90_peer_flash.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
