"""The attention kernels' dropout PTX (kernels/attention_common.py), which the interpreter cannot run: its
statements executed here by a small model of the PTX instructions they use (as the PTX ISA defines them), on every
byte value in each of the four byte positions and every threshold, must give exactly what where(keep, x, 0) gives
with keep = byte >= threshold, the rule the reference (ops/attention.py) and the interpreted kernels use. That the
compiled kernels hand these statements their operands in a tensor-core accumulator layout (four consecutive
registers = one word's bytes 0-3) is the scorecard's check (benchmarks/sm90_static.py, inline_asm); on a GPU,
tests/kernels/test_attention_kernel.py compares the compiled kernels' dropout with the reference."""

import re

import numpy as np
import pytest

from vlbert_fast.kernels.attention_common import DROPOUT_PAIRS_PTX, DROPOUT_SELECT_PTX

MASK32 = np.uint64(0xFFFFFFFF)


def _bytes(x):
    return [(x >> np.uint64(8 * i)) & np.uint64(0xFF) for i in range(4)]


def _prmt(a, b, selector):
    """prmt.b32 (default mode): byte i of the result is byte (selector nibble i & 7) of {b, a}; a nibble with its
    bit 3 set replicates that byte's sign bit instead."""
    source = _bytes(a) + _bytes(b)
    out = np.zeros_like(a)
    for i in range(4):
        nibble = (selector >> (4 * i)) & 0xF
        byte = source[nibble & 7]
        if nibble & 8:
            byte = np.where(byte & np.uint64(0x80), np.uint64(0xFF), np.uint64(0))
        out |= byte << np.uint64(8 * i)
    return out


def _halves(x):
    """The two 16-bit halves of a .b32, low first, read as fp16 (subnormals kept: no .ftz)."""
    low = (x & np.uint64(0xFFFF)).astype(np.uint16).view(np.float16)
    high = ((x >> np.uint64(16)) & np.uint64(0xFFFF)).astype(np.uint16).view(np.float16)
    return low, high


def run_ptx(text: str, operands: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Executes the statements of `text` on uint64 arrays holding .b32 values ($n -> operands[n]); returns every
    $n written. The instructions this model knows are the ones the dropout PTX uses; anything else fails."""
    regs: dict[str, np.ndarray] = {f"${n}": v.astype(np.uint64) for n, v in operands.items()}

    def value(token: str):
        token = token.strip()
        if token in regs:
            return regs[token]
        return np.uint64(int(token, 0))

    body = text.strip().removeprefix("{").removesuffix("}")
    for statement in (s.strip() for s in body.split(";")):
        if not statement or statement.startswith(".reg"):
            continue
        op, rest = statement.split(None, 1)
        if op == "mov.b32" and rest.startswith("{"):  # unpack: the first name takes the low half
            low, high, source = re.match(r"\{\s*(\w+),\s*(\w+)\s*\},\s*(\S+)", rest).groups()
            regs[low], regs[high] = value(source) & np.uint64(0xFFFF), value(source) >> np.uint64(16)
            continue
        args = [a.strip() for a in rest.split(",")]
        if op == "prmt.b32":
            regs[args[0]] = _prmt(value(args[1]), value(args[2]), int(args[3], 0))
        elif op == "set.ge.u32.f16x2":
            (a0, a1), (b0, b1) = _halves(value(args[1])), _halves(value(args[2]))
            regs[args[0]] = np.where(a0 >= b0, np.uint64(0xFFFF), np.uint64(0)) | np.where(
                a1 >= b1, np.uint64(0xFFFF0000), np.uint64(0)
            )
        elif op == "and.b32":
            regs[args[0]] = value(args[1]) & value(args[2]) & MASK32
        elif op == "setp.ge.f16":
            to_f16 = lambda v: (v & np.uint64(0xFFFF)).astype(np.uint16).view(np.float16)  # noqa: E731
            regs[args[0]] = to_f16(value(args[1])) >= to_f16(value(args[2]))
        elif op == "selp.b32":
            regs[args[0]] = np.where(regs[args[3]], value(args[1]), value(args[2]))
        else:
            raise AssertionError(f"the PTX model does not know {op!r}: extend it before trusting the test")
    return {int(k[1:]): v for k, v in regs.items() if k.startswith("$")}


def _cases():
    """(word, threshold) for every byte value in every position against every threshold 1-255."""
    rng = np.random.default_rng(0)
    values = np.arange(256, dtype=np.uint64)
    words = []
    for position in range(4):
        others = rng.integers(0, 256, size=(256, 4), dtype=np.uint64)
        others[:, position] = values
        words.append(sum(others[:, i] << np.uint64(8 * i) for i in range(4)))
    words = np.concatenate(words)  # 1024 words
    thresholds = np.arange(1, 256, dtype=np.uint64)
    word, threshold = np.meshgrid(words, thresholds, indexing="ij")
    return word.ravel(), threshold.ravel()


def _expected_keep(word, threshold):
    return [b >= threshold for b in _bytes(word)]  # element k of the four: byte k


def test_the_pairs_ptx_zeroes_exactly_the_dropped_16bit_values():
    word, threshold = _cases()
    rng = np.random.default_rng(1)
    # bf16 bit patterns of probabilities in [0, 1] (the forward's P), two per register: element 2k low, 2k + 1 high
    values = (rng.random((4, word.size), dtype=np.float32).view(np.uint32) >> 16).astype(np.uint64)
    values[:, ::7] = 0x3F80  # 1.0 exactly
    pairs = {2: values[0] | values[1] << np.uint64(16), 3: values[2] | values[3] << np.uint64(16)}
    pattern = threshold * np.uint64(0x10001)  # as _dropout_zero_pairs builds it
    words = {n: word for n in range(4, 8)}  # the four copies of one word
    out = run_ptx(DROPOUT_PAIRS_PTX.value, {**pairs, **words, **{n: pattern for n in range(8, 12)}})
    got = [out[0] & np.uint64(0xFFFF), out[0] >> np.uint64(16), out[1] & np.uint64(0xFFFF), out[1] >> np.uint64(16)]
    for k, keep in enumerate(_expected_keep(word, threshold)):
        np.testing.assert_array_equal(got[k], np.where(keep, values[k], np.uint64(0)), err_msg=f"element {k}")


def test_the_select_ptx_zeroes_exactly_the_dropped_32bit_values():
    word, threshold = _cases()
    rng = np.random.default_rng(2)
    values = rng.standard_normal((4, word.size)).astype(np.float32).view(np.uint32).astype(np.uint64)  # dP, P
    pattern = threshold * np.uint64(0x10001)  # as _dropout_select builds it
    operands = {**{4 + k: values[k] for k in range(4)}, **{8 + k: word for k in range(4)},
                **{12 + k: pattern for k in range(4)}}  # fmt: skip
    out = run_ptx(DROPOUT_SELECT_PTX.value, operands)
    for k, keep in enumerate(_expected_keep(word, threshold)):
        np.testing.assert_array_equal(out[k], np.where(keep, values[k], np.uint64(0)), err_msg=f"element {k}")


def test_the_model_knows_prmt_and_the_fp16_order():
    """The two facts the PTX rests on, checked against hand values: prmt's byte selection with a zero operand, and
    that a byte in the low bits of an fp16 (a subnormal from 1 up) orders as the byte does, 0 below them all."""
    assert int(_prmt(np.uint64(0xDDCCBBAA), np.uint64(0), 0x4140)) == 0x00BB00AA
    assert int(_prmt(np.uint64(0xDDCCBBAA), np.uint64(0), 0x4342)) == 0x00DD00CC
    assert int(_prmt(np.uint64(0x00008000), np.uint64(0), 0x9999)) == 0xFFFFFFFF  # sign replication
    as_f16 = np.arange(256, dtype=np.uint16).view(np.float16)
    assert as_f16[0] == 0 and np.all(np.diff(as_f16.astype(np.float64)) > 0)


def test_an_instruction_the_model_does_not_know_fails():
    with pytest.raises(AssertionError, match="does not know"):
        run_ptx("{ add.u32 $0, $1, $2; }", {1: np.zeros(1), 2: np.zeros(1)})
