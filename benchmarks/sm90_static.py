"""The static sm_90 scorecard: every Triton kernel variant the launchers would launch, compiled for an H100 on a
machine without a GPU, and what its SASS says about speed; plus the CUDA extension's kernels where nvcc exists.

    vlbert-fast bench static            # the full card -> benchmarks/results/sm90_static.csv and .md (~10 min, 2 cores)
    vlbert-fast bench static --smoke    # CI's subset (a few variants per kernel) with the regression checks
    python -m benchmarks.sm90_static [--quick] [--check] [--out DIR] [--no-cuda]

Columns (sass_metrics.py says how each is read):
- kernel, variant (shape and mode), dtype, dropout, config (tile constexprs, warps, stages);
- regs, spill_bytes (ptxas), smem_bytes, ctas_per_sm (from registers, shared memory, threads and the CTA limit);
- loop_instr: SASS instructions of one iteration of the hot loop (the innermost loops, summed; the whole kernel
  when it has no loop: hot_loop says which), per warp; loop_instr_per_element = loop_instr x warps / elements per
  iteration (sm90_cases.ELEMENTS): warp instructions issued per element, the SM's issue cost of the kernel's work;
- tensor_cores (wgmma / mma / none), fenced_atomics / atomics, ld128_share (128-bit share of global loads);
- programs (grid size at the case's shape), programs_per_sm (what a persistent launcher assumed), compile_s;
- inline_asm: the layouts of the kernel's inline PTX statements (sass_metrics.inline_asm_layouts), "" for none.

`checks(rows)` are the regressions CI fails on (tests/benchmarks/test_sm90_static.py runs the subset): every kernel
compiles and fits an SM; no bf16/fp16 variant and no attention variant, in any dtype or precision, spills; no
kernel, Triton or CUDA, has a fenced atomic; every persistent kernel fits the CTAs per SM its launch assumes
(ctas_per_sm >= programs_per_sm); 16-bit and TF32 attention use tensor cores; dropout costs bf16 attention at most
DROPOUT_RATIO_LIMIT times the instructions per element of the same tile without it; inline PTX runs only in
tensor-core accumulator layouts; RoIAlign stays within ROI_ALIGN_LIMITS.
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
import time
from pathlib import Path

from .sm90_static_summary import ROI_ALIGN_LIMITS

COLUMNS = [
    "kernel", "variant", "dtype", "dropout", "config", "regs", "spill_bytes", "smem_bytes", "ctas_per_sm",
    "loop_instr", "loop_instr_per_element", "hot_loop", "tensor_cores", "fenced_atomics", "atomics", "ld128_share",
    "programs", "programs_per_sm", "compile_s", "inline_asm",
]  # fmt: skip
RESULTS = Path(__file__).resolve().parent / "results"
DROPOUT_RATIO_LIMIT = 1.5
"""bf16 attention with dropout 0.1 against without, instructions per element, same tile: 1.27-1.50 on every tile the
launchers choose (16 byte draws per Philox-4x32-7 call, FlashAttention-2's rule, masked in PTX two elements per
comparison; benchmarks/results/sm90_static.md). Compare and select per element cost 1.37-1.68; one Philox-4x32-10
per element (tl.rand) 5.3-5.5."""
ATTENTION_KERNELS = ("_attn_fwd_kernel", "_attn_bwd_dkdv_kernel", "_attn_bwd_dq_kernel")


def _config_text(launch) -> str:
    tiles = " ".join(f"{k}={v}" for k, v in launch.constexprs.items() if k.startswith(("BLOCK", "ROWS", "TYPE")))
    return f"{tiles} w{launch.num_warps} s{launch.num_stages}"


def measure(launch, cache: dict) -> dict:
    """The scorecard's numbers of one compiled kernel (cached by the compiled kernel's hash: several cases that
    launch the same specialisation share one measurement)."""
    from . import sass_metrics as sm
    from .sm90_cases import ELEMENTS

    key = launch.compiled.hash
    if key not in cache:
        regs, spill = launch.registers_and_spills()
        instructions, loops = sm.parse_sass(sm.disassemble(launch.compiled.asm["cubin"]))
        elements_of, source_loop = ELEMENTS[launch.kernel]
        inner = sm.innermost(loops) if source_loop else []
        body = sm.hot_path(instructions, loops, inner)
        loop_instr = sm.counted(body)
        elements = elements_of(launch.constexprs)
        fenced, atomics = sm.fenced_atomics(instructions)
        share = sm.global_load_share_128(instructions)
        smem = launch.compiled.metadata.shared
        cache[key] = dict(
            regs=regs, spill_bytes=spill, smem_bytes=smem, ctas_per_sm=sm.ctas_per_sm(regs, smem, launch.num_warps),
            loop_instr=loop_instr, loop_instr_per_element=round(loop_instr * launch.num_warps / elements, 4),
            hot_loop=f"{len(inner)} loop" + ("s" if len(inner) > 1 else "") if inner else "kernel",
            tensor_cores=sm.tensor_cores(instructions), fenced_atomics=fenced, atomics=atomics,
            ld128_share="" if share is None else round(share, 3), compile_s=round(launch.compile_s, 2),
            inline_asm=sm.inline_asm_layouts(launch.compiled.asm["ttgir"]),
        )  # fmt: skip
    return cache[key]


def triton_rows(quick: bool, only: str | None = None, log=print) -> list[dict]:
    from .sm90_cases import cases
    from .sm90_compile import hopper_launches

    rows, cache = [], {}
    selected = [c for c in cases(quick) if only is None or c.op == only]
    with hopper_launches() as launches:
        for i, case in enumerate(selected):
            start = len(launches)
            began = time.perf_counter()
            case.run()
            for launch in launches[start:]:
                rows.append(dict(kernel=launch.kernel, variant=case.variant, dtype=case.dtype, dropout=case.dropout,
                                 config=_config_text(launch), programs=launch.programs,
                                 programs_per_sm=launch.programs_per_sm or "", **measure(launch, cache)))  # fmt: skip
            log(f"[{i + 1}/{len(selected)}] {case.op} {case.variant} {case.dtype} p={case.dropout}: "
                f"{len(launches) - start} kernels, {time.perf_counter() - began:.1f} s")  # fmt: skip
    return rows


def _cuda_kernel_name(mangled: str) -> tuple[str, str]:
    """(kernel<template args> demangled by c++filt where it exists, the element dtype of its first argument)."""
    done = subprocess.run(["c++filt", mangled], capture_output=True, text=True) if shutil.which("c++filt") else None
    name = done.stdout.strip() if done and done.returncode == 0 else mangled
    match = re.search(r"(\w+<[^()]*>)\(", name)
    short = match.group(1) if match else name
    first = re.search(r"<([\w:]+)", short)
    dtypes = {"c10::BFloat16": "bf16", "c10::Half": "fp16", "float": "fp32", "double": "fp64"}
    return short, dtypes.get(first.group(1), "") if first else ""


def cuda_rows(log=print) -> list[dict]:
    """The CUDA extension (csrc/*.cu) compiled by csrc/check_cuda_compile.sh with ptxas's report, one row per
    kernel instantiation; [] where there is no nvcc."""
    from . import sass_metrics as sm
    from .sm90_cases import CUDA_ELEMENTS

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "CUDA_CHECK_FLAGS": "-Xptxas -v"}
    done = subprocess.run([str(root / "csrc" / "check_cuda_compile.sh"), sys.executable], cwd=root, env=env,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode == 2 and "not found" in done.stderr:
        log("no nvcc: the CUDA extension is not on the card")
        return []
    if done.returncode:
        raise RuntimeError(f"csrc/check_cuda_compile.sh failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    report = done.stdout + done.stderr
    usage = {}
    for name, body in re.findall(r"Compiling entry function '(\w+)' for 'sm_\d+'\n(.*?)(?=ptxas info\s+: Compiling|\Z)",
                                 report, flags=re.S):  # fmt: skip
        usage[name] = sm.parse_ptxas_log(body)
    rows = []
    for obj in sorted((root / "build" / "cuda_check").glob("*.o")):
        sass = subprocess.run([sm.tool("cuobjdump"), "-sass", str(obj)], capture_output=True, text=True, check=True)
        for name, listing in sm.function_listings(sass.stdout).items():
            instructions, loops = sm.parse_sass(listing)
            inner = sm.innermost(loops)
            body = sm.hot_path(instructions, loops, inner)
            regs, spill = usage.get(name, ("", ""))
            short, dtype = _cuda_kernel_name(name)
            per_element = ""
            template = re.match(r"(\w+)<(.*)>$", short)
            if template and template.group(1) in CUDA_ELEMENTS:
                args = [a.strip() for a in template.group(2).split(",")]
                per_element = round(sm.counted(body) / CUDA_ELEMENTS[template.group(1)](args), 4)
            fenced, atomics = sm.fenced_atomics(instructions)
            share = sm.global_load_share_128(instructions)
            rows.append(dict(kernel=f"csrc:{obj.stem}:{short}", variant="CUDA extension", dtype=dtype, dropout=0.0,
                             config="", regs=regs, spill_bytes=spill, smem_bytes="", ctas_per_sm="",
                             loop_instr=sm.counted(body), loop_instr_per_element=per_element,
                             hot_loop=f"{len(inner)} loop",
                             tensor_cores=sm.tensor_cores(instructions), fenced_atomics=fenced, atomics=atomics,
                             ld128_share="" if share is None else round(share, 3), programs="", programs_per_sm="",
                             compile_s=""))  # fmt: skip
    log(f"CUDA extension: {len(rows)} kernels")
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# the checks CI runs


def _dropout_ratios(rows: list[dict]) -> list[tuple[str, str, str, float]]:
    """(kernel, variant, config, dropout / no-dropout instructions per element) for bf16 attention."""
    base = {(r["kernel"], r["variant"], r["config"]): r for r in rows
            if r["kernel"] in ATTENTION_KERNELS and r["dtype"] == "bf16" and float(r["dropout"]) == 0}  # fmt: skip
    ratios = []
    for r in rows:
        key = (r["kernel"], r["variant"], r["config"])
        if key in base and float(r["dropout"]) > 0:
            ratio = float(r["loop_instr_per_element"]) / float(base[key]["loop_instr_per_element"])
            ratios.append((*key, round(ratio, 3)))
    return ratios


def _occupancy_problems(rows: list[dict]) -> list[str]:
    """Persistent kernels (programs_per_sm set: their grid was sized as that many CTAs per SM) whose registers or
    shared memory let fewer CTAs share an SM: the grid then runs as two waves."""
    problems = []
    for r in rows:
        if str(r.get("programs_per_sm", "")) not in ("", "None") and int(r["ctas_per_sm"]) < int(r["programs_per_sm"]):
            problems.append(f"{r['kernel']} {r['variant']} {r['dtype']} p={r['dropout']} [{r['config']}]: "
                            f"{r['ctas_per_sm']} CTAs per SM fit ({r['regs']} registers, {r['smem_bytes']} B shared), "
                            f"the launch assumes {r['programs_per_sm']}")  # fmt: skip
    return problems


def _roi_align_problems(rows: list[dict]) -> list[str]:
    problems = []
    for r in rows:
        kernel = re.sub(r"<.*", "", r["kernel"])
        limit = ROI_ALIGN_LIMITS.get(kernel)
        if limit is None or r["dtype"] not in ("bf16", "fp16", "fp32") or r["loop_instr_per_element"] in ("", None):
            continue
        if r["kernel"].startswith("csrc:") and re.search(r", 1>$", r["kernel"]):
            continue  # the one-channel fallback (channels not a multiple of the vector)
        if float(r["loop_instr_per_element"]) > limit:
            problems.append(f"{r['kernel']} {r['variant']} {r['dtype']}: {r['loop_instr_per_element']} hot-loop "
                            f"instructions per element (limit {limit}: a quarter of before issue 18)")  # fmt: skip
    return problems


def checks(rows: list[dict], expect_kernels: set[str] | None = None) -> list[str]:
    """Every regression the rows show, as sentences; [] when the card is clean."""
    from .sm90_cases import ELEMENTS

    problems = []
    triton = [r for r in rows if not r["kernel"].startswith("csrc:")]
    missing = (set(ELEMENTS) if expect_kernels is None else expect_kernels) - {r["kernel"] for r in triton}
    if missing:
        problems.append(f"kernels that did not compile or were not launched: {sorted(missing)}")
    for r in triton:
        where = f"{r['kernel']} {r['variant']} {r['dtype']} p={r['dropout']} [{r['config']}]"
        attention = r["kernel"] in ATTENTION_KERNELS
        if int(r["spill_bytes"]) and (r["dtype"] in ("bf16", "fp16") or attention):
            problems.append(f"{where}: spills {r['spill_bytes']} bytes")
        if attention and r["tensor_cores"] == "none" and (r["dtype"] != "fp32" or "tf32" in r["variant"]):
            problems.append(f"{where}: no tensor cores")
        if int(r["ctas_per_sm"]) < 1:
            problems.append(f"{where}: does not fit an SM ({r['regs']} registers, {r['smem_bytes']} B shared)")
        if r.get("inline_asm") and r["inline_asm"] != "nvidia_mma":
            problems.append(f"{where}: inline PTX in a {r['inline_asm']} layout (the dropout PTX packs the elements "
                            "of a tensor-core accumulator layout)")  # fmt: skip
    for r in rows:  # every kernel, the CUDA extension's too: an atomic that needs no ordering is relaxed
        if int(r["fenced_atomics"] or 0):
            problems.append(f"{r['kernel']} {r['variant']} {r['dtype']} [{r['config']}]: {r['fenced_atomics']} fenced "
                            "atomics")  # fmt: skip
    problems += _occupancy_problems(triton) + _roi_align_problems(rows)
    for kernel, variant, config, ratio in _dropout_ratios(rows):
        if ratio > DROPOUT_RATIO_LIMIT:
            problems.append(f"{kernel} {variant} bf16 [{config}]: dropout costs {ratio}x the instructions per element "
                            f"(limit {DROPOUT_RATIO_LIMIT}x)")  # fmt: skip
    return problems


# ---------------------------------------------------------------------------------------------------------------------
# output


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def summary(rows: list[dict], command: str, seconds: float, problems: list[str]) -> str:
    """The markdown beside the CSV: per kernel the range of each figure, the attention dropout ratios, the spills
    and fenced atomics that exist, and the checks' verdict."""
    import triton

    from .sm90_static_summary import markdown

    return markdown(rows, command, seconds, triton.__version__, _dropout_ratios(rows), problems)


def _rebuild_summary(out: Path) -> int:
    rows = read_csv(out / "sm90_static.csv")
    old = (out / "sm90_static.md").read_text() if (out / "sm90_static.md").exists() else ""
    header = re.search(r"^`(vlbert-fast bench static[^`]*)`.* in (\d+) s\.", old, flags=re.M)
    command, seconds = (header.group(1), float(header.group(2))) if header else ("vlbert-fast bench static", 0.0)
    problems = checks(rows)
    (out / "sm90_static.md").write_text(summary(rows, command, seconds, problems))
    print(f"{out / 'sm90_static.md'} rebuilt from {len(rows)} rows; {len(problems)} checks failed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sm90_static", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI's subset: a few variants of every kernel")
    parser.add_argument("--check", action="store_true", help="exit 1 when a check fails (sm90_static.checks)")
    parser.add_argument("--out", type=Path, help="folder of sm90_static.csv/.md (default: benchmarks/results; "
                                                 "--quick: a temporary folder)")  # fmt: skip
    parser.add_argument("--no-cuda", action="store_true", help="leave the CUDA extension out (nvcc takes ~1 min)")
    parser.add_argument("--only", metavar="OP", help="only the cases of one op (attention, layer_norm, ...)")
    parser.add_argument("--summary-only", action="store_true", help="no compiling: rebuild --out's sm90_static.md "
                        "from its sm90_static.csv (after a change to the summary)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.summary_only:
        return _rebuild_summary(args.out or RESULTS)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("sm90_static: TRITON_INTERPRET=1 would interpret the kernels; run with TRITON_INTERPRET=0")
        return 2
    out = args.out or (Path(tempfile.mkdtemp(prefix="sm90_static_")) if args.quick else RESULTS)
    began = time.perf_counter()
    rows = triton_rows(args.quick, args.only)
    if not (args.quick or args.no_cuda or args.only):
        rows += cuda_rows()
    seconds = time.perf_counter() - began
    csv_path = out / "sm90_static.csv"
    write_csv(rows, csv_path)
    command = "vlbert-fast bench static" + (" --smoke" if args.quick else "")
    problems = checks(rows, expect_kernels=None if not args.only else set())
    (out / "sm90_static.md").write_text(summary(rows, command, seconds, problems))
    print(f"{len(rows)} rows in {seconds:.0f} s -> {csv_path} and sm90_static.md")
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    return 1 if problems and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
