"""What a compiled kernel will do on an H100, read from its SASS and ptxas's report (the static sm_90 scorecard,
benchmarks/sm90_static.py, and the CUDA extension's check share it).

- registers, spill bytes: ptxas's own report (`-v`: "Used N registers", "N bytes spill stores / loads");
- CTAs per SM: the smallest of the limits that registers, shared memory, threads and the CTA count put on one SM;
- the hot loop: the innermost loops of the SASS (each the range of a backward branch), their instructions summed;
- tensor cores: HGMMA (Hopper's warpgroup MMA, wgmma) or HMMA (mma.sync), else none (FFMA dots);
- fenced atomics: an ATOM/RED with a MEMBAR within a few instructions of it (acq_rel atomics pay one per call);
- the share of 128-bit global loads among all global loads (LDG and the cp.async LDGSTS that fill shared memory).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import triton

NVIDIA_BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"

# H100 SXM (sm_90) per-SM limits, CUDA C Programming Guide, "Compute Capabilities", table 21.
SM90_MAX_CTAS = 32
SM90_MAX_WARPS = 64
SM90_REGISTERS = 65536
SM90_REGISTER_UNIT = 256  # registers are allocated per warp in units of 256
SM90_SHARED_BYTES = 233472  # 228 KiB per SM
SM90_SHARED_PER_CTA_RESERVED = 1024  # the driver reserves 1 KiB of shared memory per CTA
SM90_SMS = 132

FENCE_WINDOW = 3  # a MEMBAR this many instructions before or after an atomic belongs to it
_LINE = re.compile(r"^\s*/\*([0-9a-f]+)\*/\s+(.*?)\s*;")
_LABEL = re.compile(r"^(\.L_x_\d+):")
_TARGET = re.compile(r"`\((\.L_x_\d+)\)")


@dataclass
class Instruction:
    address: int
    opcode: str  # with modifiers, e.g. "LDG.E.128"
    text: str  # the whole instruction after its address


def tool(name: str) -> str:
    """A CUDA binary tool: Triton's own copy (its wheel ships ptxas, cuobjdump and nvdisasm), else the PATH's."""
    path = NVIDIA_BIN / name
    return str(path) if path.exists() else name


def parse_sass(listing: str) -> tuple[list[Instruction], list[tuple[int, int]]]:
    """Instructions of one function's SASS (nvdisasm -c or cuobjdump -sass text) and its loops as (first, last)
    instruction indices, last being the backward branch. A branch to itself (the trap after EXIT) is no loop."""
    instructions: list[Instruction] = []
    labels: dict[str, int] = {}
    branches: list[tuple[int, str | int]] = []
    for line in listing.splitlines():
        label = _LABEL.match(line.strip())
        if label:
            labels[label.group(1)] = len(instructions)
            continue
        match = _LINE.match(line)
        if not match:
            continue
        text = match.group(2)
        body = re.sub(r"^@!?U?P\w+\s+", "", text)
        opcode = body.split()[0] if body else ""
        if opcode.startswith("BRA"):
            target = _TARGET.search(body)
            if target:
                branches.append((len(instructions), target.group(1)))
            else:  # cuobjdump prints a hex address
                address = re.search(r"0x([0-9a-f]+)", body)
                if address:
                    branches.append((len(instructions), int(address.group(1), 16)))
        instructions.append(Instruction(int(match.group(1), 16), opcode, text))
    by_address = {ins.address: i for i, ins in enumerate(instructions)}
    loops = []
    for index, target in branches:
        first = labels.get(target) if isinstance(target, str) else by_address.get(target)
        if first is not None and first < index:
            loops.append((first, index))
    return instructions, loops


def innermost(loops: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The loops that contain no other loop."""
    return [a for a in loops if not any(b != a and a[0] <= b[0] and b[1] <= a[1] for b in loops)]


def hot_path(instructions: list[Instruction], loops: list[tuple[int, int]], inner: list[tuple[int, int]]):
    """The instructions of the hot loop: the given innermost loops, summed; without them, the code outside every
    loop (a kernel whose source has no loop, where SASS loops are library slow paths)."""
    if inner:
        return [ins for a, b in inner for ins in instructions[a : b + 1]]
    inside = {i for a, b in loops for i in range(a, b + 1)}
    return [ins for i, ins in enumerate(instructions) if i not in inside]


def counted(instructions: list[Instruction]) -> int:
    """Instructions that issue work: everything but NOP padding."""
    return sum(1 for ins in instructions if ins.opcode != "NOP")


def tensor_cores(instructions: list[Instruction]) -> str:
    opcodes = {ins.opcode.split(".")[0] for ins in instructions}
    if "HGMMA" in opcodes:
        return "wgmma"
    if "HMMA" in opcodes:
        return "mma"
    return "none"


def fenced_atomics(instructions: list[Instruction]) -> tuple[int, int]:
    """(atomics with a MEMBAR within FENCE_WINDOW instructions, all atomics) among global ATOM/RED."""
    atomic = [i for i, ins in enumerate(instructions) if ins.opcode.split(".")[0] in ("ATOM", "RED", "ATOMG", "REDG")]
    fences = [i for i, ins in enumerate(instructions) if ins.opcode.startswith("MEMBAR")]
    fenced = sum(1 for i in atomic if any(abs(i - f) <= FENCE_WINDOW for f in fences))
    return fenced, len(atomic)


def global_load_share_128(instructions: list[Instruction]) -> float | None:
    """Share of 128-bit accesses among the global loads (LDG, and LDGSTS: cp.async into shared memory); None when the
    kernel loads nothing from global memory."""
    loads = [ins.opcode for ins in instructions if ins.opcode.split(".")[0] in ("LDG", "LDGSTS")]
    if not loads:
        return None
    return sum(1 for op in loads if ".128" in op) / len(loads)


def spills(instructions: list[Instruction]) -> int:
    """Local-memory instructions (STL/LDL): spill traffic as the SASS shows it."""
    return sum(1 for ins in instructions if ins.opcode.split(".")[0] in ("STL", "LDL"))


def ctas_per_sm(registers: int, shared_bytes: int, num_warps: int) -> int:
    """CTAs of this kernel that fit on one SM at once (registers, shared memory, warps, the CTA limit)."""
    per_warp = -(-registers * 32 // SM90_REGISTER_UNIT) * SM90_REGISTER_UNIT
    by_registers = (SM90_REGISTERS // max(per_warp, 1)) // num_warps
    by_shared = SM90_SHARED_BYTES // (shared_bytes + SM90_SHARED_PER_CTA_RESERVED)
    return min(SM90_MAX_CTAS, SM90_MAX_WARPS // num_warps, by_registers, by_shared)


def ptxas_report(ptx: str, arch: str = "sm_90a") -> tuple[int, int]:
    """(registers, spill bytes: stores + loads) from `ptxas -v` on the PTX, for the one kernel in it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        Path(path).write_text(ptx)
        report = subprocess.run(
            [tool("ptxas"), f"--gpu-name={arch}", "-v", path, "-o", os.devnull], capture_output=True, text=True,
            check=True,
        ).stderr  # fmt: skip
    return parse_ptxas_log(report)


def parse_ptxas_log(report: str) -> tuple[int, int]:
    """(registers, spill bytes) of the first function in a `ptxas -v` log."""
    registers = int(re.search(r"Used (\d+) registers", report).group(1))
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    return registers, (int(spill.group(1)) + int(spill.group(2))) if spill else 0


def disassemble(cubin: bytes) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        Path(path).write_bytes(cubin)
        return subprocess.run([tool("nvdisasm"), "-c", path], capture_output=True, text=True, check=True).stdout


def function_listings(sass: str) -> dict[str, str]:
    """cuobjdump -sass of an object file with several kernels: function name -> its listing."""
    parts = re.split(r"^\s*Function : (\S+)\s*$", sass, flags=re.M)
    return {name: body for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def inline_asm_layouts(ttgir: str) -> str:
    """The layouts (ttg encodings: nvidia_mma, blocked, linear, ...) of the kernel's inline PTX statements
    (tt.elementwise_inline_asm results), sorted and joined by ";"; "" when it has none. A statement that packs
    elements relies on which elements a thread holds in consecutive registers: the attention kernels' dropout PTX
    (kernels/attention_common.py) is written for the tensor-core accumulator layouts only."""
    aliases = dict(re.findall(r"^(#[\w.]+) = #ttg\.(\w+)<", ttgir, flags=re.M))
    found = re.findall(r"tt\.elementwise_inline_asm .*-> tensor<[^>]*?, (#[\w.]+)>", ttgir)
    return ";".join(sorted({aliases.get(alias, alias) for alias in found}))
