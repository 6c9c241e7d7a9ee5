"""The markdown summary of the static sm_90 scorecard (benchmarks/sm90_static.py writes it beside the CSV)."""

from __future__ import annotations

from collections import defaultdict

ROI_ALIGN_BEFORE = {
    "_roi_align_fwd_kernel": {"bf16": 3.8594, "fp16": 3.8125, "fp32": 3.6562},
    "_roi_align_bwd_kernel": {"bf16": 4.0781, "fp16": 4.0625, "fp32": 4.0},
    "csrc:roi_align_cuda:roi_align_fwd_kernel": {"bf16": 6.1562, "fp16": 6.1562, "fp32": 5.9062, "fp64": 6.4375},
    "csrc:roi_align_cuda:roi_align_bwd_kernel": {"bf16": 5.7188, "fp16": 5.7188, "fp32": 5.7188, "fp64": 6.125},
}
"""RoIAlign's hot-loop instructions per output element before issue 18 (main at 1cab113; one sample per bin,
C = 1024, 14 x 14, channels-last): the Triton kernels ran one program per bin with 1-2 channels per thread; the CUDA
ones one thread per output element, whose innermost loop (one sample) took 197 / 183 instructions per warp of 32
elements (189 in fp32, 206 / 196 in fp64)."""
ROI_ALIGN_LIMITS = {kernel: round(min(v for d, v in before.items() if d != "fp64") / 4, 3)
                    for kernel, before in ROI_ALIGN_BEFORE.items()}  # fmt: skip
"""At most a quarter of the lowest of those (bf16/fp16/fp32). The CUDA limit applies to the vectorised
instantiations (VEC > 1, 16 bytes of channels per thread: what channels-last maps with C a multiple of 16 bytes
get) in bf16/fp16/fp32; fp64 and the one-channel fallback are listed in the summary, not held to it."""


def _range(values) -> str:
    values = [float(v) for v in values if v not in ("", None)]
    if not values:
        return ""
    low, high = min(values), max(values)
    fmt = (lambda v: f"{v:g}") if all(v == int(v) for v in values) else (lambda v: f"{v:.3g}")
    return fmt(low) if low == high else f"{fmt(low)}-{fmt(high)}"


def _attention_table(rows: list[dict]) -> list[str]:
    lines = [
        "| kernel | variant | dtype | dropout | config | regs | spill B | smem KB | CTAs/SM | instr/elem | TC |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    seen = set()
    for r in rows:
        if not r["kernel"].startswith("_attn_") or r["kernel"] == "_attn_bwd_preprocess_kernel":
            continue
        variant = " ".join(w for w in r["variant"].split() if not w.startswith("S"))  # lengths share configs
        key = (r["kernel"], variant, r["dtype"], r["dropout"], r["config"])
        if key in seen:
            continue
        seen.add(key)
        lines.append(
            f"| {r['kernel'][6:-7]} | {variant} | {r['dtype']} | {r['dropout']} | {r['config']} | {r['regs']} | "
            f"{r['spill_bytes']} | {int(r['smem_bytes']) / 1024:.0f} | {r['ctas_per_sm']} | "
            f"{float(r['loop_instr_per_element']):.3f} | {r['tensor_cores']} |"
        )
    return lines


def _configs_per_length(rows: list[dict]) -> list[str]:
    """Which tiles the autotuner may pick at each row length (its pruned list), per kernel and dtype."""
    picks = defaultdict(set)
    for r in rows:
        if r["kernel"].startswith("_attn_") and r["kernel"] != "_attn_bwd_preprocess_kernel":
            words = r["variant"].split()
            length = next(w for w in words if w.startswith("S"))
            rest = " ".join(w for w in words if not w.startswith("S"))
            picks[(r["kernel"][6:-7], rest, r["dtype"], length)].add(r["config"])
    lines = ["| kernel | variant | dtype | length | autotune candidates |", "|---|---|---|---|---|"]
    for (kernel, rest, dtype, length), configs in sorted(picks.items()):
        lines.append(f"| {kernel} | {rest} | {dtype} | {length} | {'; '.join(sorted(configs))} |")
    return lines


def _kernel_table(rows: list[dict]) -> list[str]:
    groups = defaultdict(list)
    for r in rows:
        if not r["kernel"].startswith("_attn_") or r["kernel"] == "_attn_bwd_preprocess_kernel":
            groups[r["kernel"]].append(r)
    lines = [
        "| kernel | rows | regs | max spill B | CTAs/SM | programs/SM assumed | instr/elem | hot loop | fenced "
        "atomics | 128-bit loads |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kernel, group in groups.items():
        spills = max((int(r["spill_bytes"]) for r in group if r["spill_bytes"] != ""), default="")
        lines.append(
            f"| {kernel} | {len(group)} | {_range(r['regs'] for r in group)} | {spills} | "
            f"{_range(r['ctas_per_sm'] for r in group)} | {_range(r['programs_per_sm'] for r in group)} | "
            f"{_range(r['loop_instr_per_element'] for r in group)} | {group[0]['hot_loop']} | "
            f"{_range(r['fenced_atomics'] for r in group)} of {_range(r['atomics'] for r in group)} | "
            f"{_range(r['ld128_share'] for r in group)} |"
        )
    return lines


def _findings(rows: list[dict]) -> list[str]:
    """Spills, fenced atomics, and persistent launches that assume more programs per SM than fit; the row lengths
    of one attention variant share their kernels, so they are named once."""
    found = defaultdict(set)
    for r in rows:
        variant = " ".join(w for w in r["variant"].split() if not (w.startswith("S") and w[1:].isdigit()))
        where = f"`{r['kernel']}` {variant} {r['dtype']} [{r['config']}]"
        if r["spill_bytes"] not in ("", "0") and int(r["spill_bytes"]):
            found[f"spills {r['spill_bytes']} B: {where}"].add(str(r["dropout"]))
        if r["fenced_atomics"] not in ("", "0") and int(r["fenced_atomics"]):
            found[f"{r['fenced_atomics']} of {r['atomics']} atomics fenced by a MEMBAR: {where}"].add(str(r["dropout"]))
        if r["programs_per_sm"] not in ("", None) and r["ctas_per_sm"] not in ("", None):
            if int(r["programs_per_sm"]) > int(r["ctas_per_sm"]):
                line = f"the launcher assumes {r['programs_per_sm']} programs per SM, {r['ctas_per_sm']} fit: {where}"
                found[line].add(str(r["dropout"]))
    return [f"- {line} (dropout {', '.join(sorted(p))})" for line, p in sorted(found.items())] or ["- none"]


def _roi_align_table(rows: list[dict]) -> list[str]:
    """Each RoIAlign kernel of the card (the CUDA ones per vector width) against ROI_ALIGN_BEFORE."""
    import re

    lines = ["| kernel | dtype | before | now | fewer by | limit |", "|---|---|---|---|---|---|"]
    seen = set()
    for r in rows:
        base = re.sub(r"<.*", "", r["kernel"])
        before = ROI_ALIGN_BEFORE.get(base, {}).get(r["dtype"])
        if before is None or r["loop_instr_per_element"] in ("", None) or (r["kernel"], r["dtype"]) in seen:
            continue
        seen.add((r["kernel"], r["dtype"]))
        now = float(r["loop_instr_per_element"])
        lines.append(f"| {r['kernel']} | {r['dtype']} | {before} | {now:.3f} | {before / now:.1f}x | "
                     f"{ROI_ALIGN_LIMITS[base]} |")  # fmt: skip
    return lines


def markdown(rows, command, seconds, triton_version, ratios, problems) -> str:
    cuda = [r for r in rows if r["kernel"].startswith("csrc:")]
    triton_rows = [r for r in rows if not r["kernel"].startswith("csrc:")]
    out = [
        "# Static sm_90 scorecard",
        "",
        f"`{command}`: {len(triton_rows)} Triton kernel launches ({len({r['kernel'] for r in triton_rows})} kernels) "
        f'compiled for `GPUTarget("cuda", 90, 32)` with Triton {triton_version} on a machine without a GPU, '
        f"{len(cuda)} CUDA extension kernels, in {seconds:.0f} s. Columns and definitions: benchmarks/sm90_static.py; "
        "shapes: benchmarks/sm90_cases.py. Static figures: what the GPU will be asked to do, not how fast it does it.",
        "",
        "## Checks",
        "",
        *(
            [f"- FAILED: {p}" for p in problems]
            or [
                "- all pass (no bf16/fp16 or attention spills, no fenced atomic "
                "in any kernel, persistent kernels at their assumed CTAs per SM, tensor cores where expected, "
                "dropout within the limit, inline PTX only in tensor-core layouts, RoIAlign within a quarter of its "
                "instructions before issue 18)"
            ]
        ),  # fmt: skip
        "",
        "## Attention: dropout's cost (bf16, instructions per element with p = 0.1 over without, same tile)",
        "",
        "| kernel | variant | config | ratio |",
        "|---|---|---|---|",
        *sorted(
            {
                f"| {k[6:-7]} | {' '.join(w for w in v.split() if not w.startswith('S'))} | {c} | {x} |"
                for k, v, c, x in ratios
            }
        ),  # fmt: skip
        "",
        "## Attention variants",
        "",
        *_attention_table(triton_rows),
        "",
        "## Attention: the autotuner's candidates per row length",
        "",
        *_configs_per_length(triton_rows),
        "",
        "## The other kernels (ranges over their variants)",
        "",
        *_kernel_table(triton_rows),
        "",
        "## Findings for the memory-bound kernels and RoIAlign",
        "",
        *_findings(rows),
        "",
    ]
    out += ["## RoIAlign: hot-loop instructions per output element, before issue 18 and now", "",
            *_roi_align_table(rows), ""]  # fmt: skip
    if cuda:
        out += ["## CUDA extension (nvcc, sm_90)", "", "| kernel | dtype | regs | spill B | loop instr | instr/elem | "
                "fenced atomics | 128-bit loads |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        out += [f"| {r['kernel']} | {r['dtype']} | {r['regs']} | {r['spill_bytes']} | {r['loop_instr']} | "
                f"{r['loop_instr_per_element']} | {r['fenced_atomics']} of {r['atomics']} | {r['ld128_share']} |"
                for r in cuda]  # fmt: skip
        out.append("")
    return "\n".join(out)
