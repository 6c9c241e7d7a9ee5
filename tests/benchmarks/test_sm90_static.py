"""The static sm_90 scorecard: its SASS reading on hand-written listings, its checks on rows built to fail each one,
and CI's subset compiled for real (every Triton kernel through its launcher, for an H100, on this CPU machine),
which must pass the checks: a kernel that starts to spill, a fenced atomic in attention, dropout that costs more
than the limit, or a kernel that no longer compiles fails this test."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import sass_metrics
from benchmarks.sm90_cases import ELEMENTS
from benchmarks.sm90_static import ATTENTION_KERNELS, COLUMNS, DROPOUT_RATIO_LIMIT, checks

ROOT = Path(__file__).resolve().parents[2]

LISTING = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
.L_x_0:
        /*0020*/                   LDG.E R8, desc[UR4][R2.64] ;
        /*0030*/                   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR8], R24 ;
        /*0040*/                   NOP ;
.L_x_1:
        /*0050*/                   FFMA R9, R8, R8, R9 ;
        /*0060*/               @P0 BRA `(.L_x_1) ;
        /*0070*/                   MEMBAR.ALL.GPU ;
        /*0080*/                   RED.E.ADD.F32.FTZ.RN.STRONG.GPU desc[UR4][R2.64], R9 ;
        /*0090*/              @!P1 BRA `(.L_x_0) ;
        /*00a0*/                   IADD3 R2, R2, 0x4, RZ ;
        /*00b0*/                   IADD3 R3, R3, 0x4, RZ ;
        /*00c0*/                   ATOM.E.ADD.F32.FTZ.RN.STRONG.GPU PT, R0, desc[UR4][R2.64], R9 ;
        /*00d0*/                   STG.E [R2.64], R0 ;
        /*00e0*/                   EXIT ;
.L_x_2:
        /*00f0*/                   BRA `(.L_x_2);
"""


def test_sass_reading():
    instructions, loops = sass_metrics.parse_sass(LISTING)
    assert len(instructions) == 16
    assert sorted(loops) == [(2, 9), (5, 6)]  # the trap after EXIT (a branch to itself) is no loop
    assert sass_metrics.innermost(loops) == [(5, 6)]
    assert sass_metrics.counted(instructions[2:10]) == 7  # NOP padding does not count
    assert sass_metrics.tensor_cores(instructions) == "wgmma"
    assert sass_metrics.fenced_atomics(instructions) == (1, 2)  # the RED has its MEMBAR, the ATOM not
    assert sass_metrics.global_load_share_128(instructions) == 0.5


TTGIR = """
#blocked = #ttg.blocked<{sizePerThread = [1, 8], threadsPerWarp = [4, 8], warpsPerCTA = [8, 1], order = [1, 0]}>
#mma = #ttg.nvidia_mma<{versionMajor = 3, versionMinor = 0, warpsPerCTA = [8, 1], instrShape = [16, 64, 16]}>
    %p = tt.elementwise_inline_asm "{...}" {constraints = "=r,=r,r,r", packed_element = 4 : i32, pure = true} %a, %b :
tensor<128x64xbf16, #mma>, tensor<128x64xi32, #mma> -> tensor<128x64xbf16, #mma> loc(#loc1)
"""


def test_inline_asm_layouts_are_read_from_the_ttgir():
    flat = TTGIR.replace(" :\ntensor", " : tensor")  # one op per line, as Triton prints it
    assert sass_metrics.inline_asm_layouts(flat) == "nvidia_mma"
    assert sass_metrics.inline_asm_layouts(flat.replace("-> tensor<128x64xbf16, #mma>", "-> tensor<128x64xbf16, "
                                                        "#blocked>")) == "blocked"  # fmt: skip
    assert sass_metrics.inline_asm_layouts("#mma = #ttg.nvidia_mma<{}>\n") == ""


def test_ctas_per_sm():
    assert sass_metrics.ctas_per_sm(registers=128, shared_bytes=49152, num_warps=8) == 2  # registers: 64K / 32K
    assert sass_metrics.ctas_per_sm(registers=32, shared_bytes=0, num_warps=4) == 16  # warps: 64 / 4
    assert sass_metrics.ctas_per_sm(registers=16, shared_bytes=0, num_warps=1) == 32  # the CTA limit
    assert sass_metrics.ctas_per_sm(registers=64, shared_bytes=100 * 1024, num_warps=4) == 2  # shared memory


def row(kernel="_attn_fwd_kernel", **changes):
    base = dict(kernel=kernel, variant="hd64 S128 fwd", dtype="bf16", dropout="0.0", config="BLOCK_M=128 w8 s2",
                regs="128", spill_bytes="0", smem_bytes="49152", ctas_per_sm="2", loop_instr="292",
                loop_instr_per_element="0.285", tensor_cores="wgmma", fenced_atomics="0", atomics="0")  # fmt: skip
    return {**base, **changes}


def test_each_check_fails_on_its_regression():
    clean = [row(), row(dropout="0.1", loop_instr_per_element="0.40")]
    assert checks(clean, expect_kernels={"_attn_fwd_kernel"}) == []
    cases = {
        "spills 64 bytes": [row(spill_bytes="64")],
        "2 fenced atomics": [row(fenced_atomics="2", atomics="2")],
        "no tensor cores": [row(tensor_cores="none")],
        "does not fit an SM": [row(ctas_per_sm="0")],
        "dropout costs": [row(), row(dropout="0.1", loop_instr_per_element=str(0.285 * (DROPOUT_RATIO_LIMIT + 0.02)))],
        "did not compile": [row(kernel="_attn_bwd_dq_kernel")],
        "inline PTX in a blocked layout": [row(inline_asm="blocked")],
    }
    for needle, rows in cases.items():
        problems = checks(rows, expect_kernels={"_attn_fwd_kernel"})
        assert any(needle in p for p in problems), (needle, problems)
    # the 32-query dK/dV tiles (warps side by side across the keys) are held to the same limit as every tile
    tile32 = dict(kernel="_attn_bwd_dkdv_kernel", config="BLOCK_M=32 BLOCK_N=64 w4 s1")
    at = lambda ratio: [row(**tile32), row(**tile32, dropout="0.1", loop_instr_per_element=str(0.285 * ratio))]  # noqa: E731
    assert checks(at(1.49), {"_attn_bwd_dkdv_kernel"}) == []
    assert any("limit 1.5x" in p for p in checks(at(1.53), {"_attn_bwd_dkdv_kernel"}))
    # fp32 "ieee" attention uses FFMA dots (no tensor cores) but may not spill; a fp32 row kernel may (reported, not
    # failed); fp32 "tf32" attention may do neither
    ieee = row(dtype="fp32", variant="hd64 S128 fwd ieee", tensor_cores="none")
    assert checks([ieee], {"_attn_fwd_kernel"}) == []
    assert len(checks([{**ieee, "spill_bytes": "136"}], {"_attn_fwd_kernel"})) == 1
    tf32 = [row(dtype="fp32", variant="hd64 S128 fwd tf32", tensor_cores="none", spill_bytes="76")]
    assert len(checks(tf32, {"_attn_fwd_kernel"})) == 2
    assert checks([row(kernel="_bdrln_bwd_kernel", dtype="fp32", spill_bytes="8")], {"_bdrln_bwd_kernel"}) == []


def test_fenced_atomics_fail_in_every_kernel_the_cuda_extension_included():
    embedding = row(kernel="_fused_embedding_bwd_kernel", variant="H768 bwd", fenced_atomics="3", atomics="3")
    assert any("3 fenced atomics" in p for p in checks([embedding], set()))
    cuda = row(kernel="csrc:roi_align_cuda:roi_align_bwd_kernel<float, float, 4>", fenced_atomics="4", atomics="4",
               loop_instr_per_element="0.5")  # fmt: skip
    assert any("4 fenced atomics" in p for p in checks([cuda], set()))
    assert checks([row(kernel="_fused_embedding_bwd_kernel", atomics="3")], set()) == []  # relaxed: REDG, no MEMBAR


def test_a_persistent_kernel_below_its_assumed_ctas_per_sm_fails():
    def persistent(ctas, assumed):
        return row(
            kernel="_bdrln_bwd_kernel", variant="H768 bwd", regs="168", ctas_per_sm=ctas, programs_per_sm=assumed
        )

    assert any("the launch assumes 2" in p for p in checks([persistent("1", "2")], set()))
    assert checks([persistent("2", "2"), persistent("5", "2"), persistent("1", "1")], set()) == []
    assert checks([row(ctas_per_sm="1", programs_per_sm="")], set()) == []  # not a persistent launch


def test_roi_align_over_a_quarter_of_its_old_instructions_fails():
    def roi(kernel, per_element, dtype="bf16"):
        return row(kernel=kernel, variant="C1024 14x14 NHWC", dtype=dtype, loop_instr_per_element=per_element,
                   tensor_cores="none")  # fmt: skip

    failing = [
        roi("_roi_align_fwd_kernel", "3.86"),
        roi("csrc:roi_align_cuda:roi_align_bwd_kernel<c10::Half, float, 8>", "2.0"),
    ]
    assert len([p for p in checks(failing, set()) if "a quarter" in p]) == 2
    passing = [
        roi("_roi_align_fwd_kernel", "0.64"),
        roi("_roi_align_bwd_kernel", "0.65", "fp32"),
        roi("csrc:roi_align_cuda:roi_align_fwd_kernel<c10::BFloat16, float, 8>", "0.56"),
        roi("csrc:roi_align_cuda:roi_align_fwd_kernel<c10::BFloat16, float, 1>", "1.97"),  # the 1-channel fallback
        roi("csrc:roi_align_cuda:roi_align_fwd_kernel<double, double, 2>", "1.6", "fp64"),  # not held to the limit
    ]
    assert checks(passing, set()) == []


@pytest.mark.slow
@pytest.mark.skipif(not (sass_metrics.NVIDIA_BIN / "ptxas").exists(), reason="this Triton has no NVIDIA backend")
def test_ci_subset_compiles_every_kernel_for_sm90_and_passes_the_checks(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "0"}  # compile for real: the interpreter is set for this process
    command = [sys.executable, "-m", "benchmarks.sm90_static", "--quick", "--check", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    with (tmp_path / "sm90_static.csv").open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    assert {r["kernel"] for r in rows} == set(ELEMENTS)
    assert checks(rows) == []
    # bf16 attention with dropout runs the dropout PTX, in a tensor-core layout (a fallback to the interpreter's
    # compare and select would show as "")
    dropout = [r for r in rows if r["kernel"] in ATTENTION_KERNELS and r["dtype"] == "bf16" and r["dropout"] == "0.1"]
    assert {r["kernel"] for r in dropout} == set(ATTENTION_KERNELS)
    assert {r["inline_asm"] for r in dropout} == {"nvidia_mma"}
    assert "## Checks" in (tmp_path / "sm90_static.md").read_text()
