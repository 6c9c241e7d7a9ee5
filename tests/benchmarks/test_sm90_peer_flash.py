"""FlashAttention-2 on the static scorecard (benchmarks/sm90_peer_flash.py): the translation units it writes, its
reading of a kernel's SASS, our rows taken from the committed scorecard, the committed comparison, and the errors a
user without the peer's sources or nvcc meets. The full run needs a flash-attention checkout and nvcc (about 40 s);
its output is committed in benchmarks/results/sm90_peer_flash.{csv,md}."""

import csv
from pathlib import Path

import pytest

from benchmarks import sm90_peer_flash as peer

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"

ONE_LOOP = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;
.L_x_0:
        /*0010*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;
        /*0020*/                   LOP3.LUT R2, R2, R3, RZ, 0x3c, !PT ;
        /*0030*/                   NOP ;
        /*0040*/                   RED.E.ADD.F32.FTZ.RN.STRONG.GPU desc[UR4][R6.64], R9 ;
        /*0050*/              @!P1 BRA `(.L_x_0) ;
        /*0060*/                   EXIT ;
"""


def test_translation_units_instantiate_each_kernel_with_its_dropout_flag():
    fwd, bwd = peer.translation_unit("fwd"), peer.translation_unit("bwd")
    assert fwd.count("__global__") == 3 and bwd.count("__global__") == 2
    assert '#include "flash_fwd_kernel.h"' in fwd and '#include "flash_bwd_kernel.h"' in bwd
    drop = fwd.split("peer_fwd_drop(")[1].split("}")[0]
    assert "compute_attn<Flash_fwd_kernel_traits<64, 128, 64, 4, false, false, T>, true," in drop
    nodrop = fwd.split("peer_fwd_nodrop(")[1].split("}")[0]
    assert "compute_attn<Flash_fwd_kernel_traits<64, 128, 128, 4, false, false, T>, false," in nodrop
    bwd_drop = bwd.split("peer_bwd_drop(")[1].split("}")[0]
    traits = "Flash_bwd_kernel_traits<64, 128, 128, 8, 4, 4, 4, false, false, T>"
    assert f"compute_dq_dk_dv_seqk_parallel<{traits}, true," in bwd_drop


def test_the_hot_loop_is_read_like_the_scorecard():
    kernel = peer.PeerKernel("k", "bwd", True, 128, 128, 8, "", "")
    row = peer.measure_listing(ONE_LOOP, kernel)
    assert row["loop_instr"] == 4  # HMMA, LOP3, RED, BRA; the NOP does not count
    assert row["loop_instr_per_element"] == round(4 * 8 / (128 * 128), 4)
    assert (row["tensor_cores"], row["atomics"], row["fenced_atomics"]) == ("mma", 1, 0)


def test_a_listing_with_another_loop_shape_is_refused():
    two_loops = ONE_LOOP.replace("EXIT ;", "IADD3 R2, R2, 0x4, RZ ;\n.L_x_1:\n        /*0070*/   FADD R3, R3, R3 ;\n"
                                 "        /*0080*/   @P0 BRA `(.L_x_1) ;\n        /*0090*/   EXIT ;")  # fmt: skip
    kernel = peer.PeerKernel("k", "fwd", False, 64, 64, 4, "", "")
    with pytest.raises(peer.PeerSourceError, match="2 innermost loops"):
        peer.measure_listing(two_loops, kernel)
    with pytest.raises(peer.PeerSourceError, match="0 innermost loops"):
        peer.measure_listing("        /*0000*/                   EXIT ;\n", kernel)


def test_our_rows_come_from_the_committed_scorecard():
    rows = peer.our_rows(RESULTS / "sm90_static.csv")
    kernels = {(r["kernel"], r["dropout"]) for r in rows}
    for name in ("_attn_fwd_kernel", "_attn_bwd_dkdv_kernel", "_attn_bwd_dq_kernel"):
        assert {(name, 0.0), (name, 0.1)} <= kernels
    for r in rows:
        block_m = int(r["config"].split("BLOCK_M=")[1].split()[0])
        block_n = int(r["config"].split("BLOCK_N=")[1].split()[0])
        assert r["elements"] == block_m * block_n
        warps = int(r["config"].split(" w")[1].split()[0])
        assert abs(r["loop_instr"] * warps / r["elements"] - r["loop_instr_per_element"]) < 1e-3


def test_the_committed_comparison_matches_its_rows():
    with open(RESULTS / "sm90_peer_flash.csv", newline="") as f:
        rows = [{**r, "dropout": float(r["dropout"]), "loop_instr_per_element": float(r["loop_instr_per_element"])}
                for r in csv.DictReader(f)]  # fmt: skip
    assert {r["peer"] for r in rows} == {"flash_attn2", "ours"}
    text = (RESULTS / "sm90_peer_flash.md").read_text()
    fa = peer._per_element(rows, "flash_attn2", "peer_fwd_nodrop_128x64", 0.0)
    fa_drop = peer._per_element(rows, "flash_attn2", "peer_fwd_drop", 0.1)
    assert f"| {fa:.4f} | {fa_drop:.4f} | {fa_drop / fa:.3f} |" in text
    ours = peer.our_rows(RESULTS / "sm90_static.csv")  # the scorecard the comparison was made with
    for r in (r for r in rows if r["peer"] == "ours"):
        assert any(o["config"] == r["config"] and o["dropout"] == r["dropout"]
                   and o["loop_instr_per_element"] == r["loop_instr_per_element"] for o in ours), r  # fmt: skip


def test_missing_sources_say_what_to_provide(tmp_path):
    with pytest.raises(peer.PeerSourceError, match="git clone --recursive"):
        peer.sources(tmp_path, None)
    src = tmp_path / "csrc" / "flash_attn" / "src"
    src.mkdir(parents=True)
    (src / "flash_fwd_kernel.h").write_text("")
    with pytest.raises(peer.PeerSourceError, match="csrc/cutlass submodule"):
        peer.sources(tmp_path, None)


def test_the_command_without_a_checkout_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FLASH_ATTN_SRC", raising=False)
    assert peer.main(["--out", str(tmp_path)]) == 2
    assert "--flash-attn" in capsys.readouterr().err
    assert peer.main(["--flash-attn", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "flash_fwd_kernel.h" in capsys.readouterr().err
    assert not list(tmp_path.glob("sm90_peer_flash.*"))  # nothing written on an error
