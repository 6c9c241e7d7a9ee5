"""varlen_attention: the reference against an independent block-diagonal spelling, SDPA against the reference,
the seeded dropout mask (spelled again here in plain Python integers), and what `auto` picks on a CPU."""

import pytest
import torch

from vlbert_fast.ops import varlen_attention, varlen_attention_packed, varlen_attention_reference
from vlbert_fast.ops.attention import ATTENTION, attention_dropout_keep, dropout_keep_threshold
from vlbert_fast.ops.embedding import philox_4x32

from .attention_inputs import block_diagonal_attention, cu_seqlens_of, output_and_grads, packed_qkv

LENGTHS = {
    "one token": [1],
    "primes": [7, 13, 2],
    "mixed with a single token": [5, 1, 17, 3],
    "an empty sequence inside": [4, 0, 6],
}
# fp32 against fp64: scores and softmax in fp32 for a few dozen keys differ by ~1e-7 relative.
FP32 = (2e-6, 1e-5)


@pytest.mark.parametrize("case", list(LENGTHS))
def test_reference_equals_block_diagonal_attention(case):
    q, k, v, cu, max_len, _ = packed_qkv(LENGTHS[case], heads=3, head_dim=8)
    got = varlen_attention_reference(q, k, v, cu, max_len)
    torch.testing.assert_close(got.double(), block_diagonal_attention(q, k, v, cu), atol=FP32[0], rtol=FP32[1])
    scaled = varlen_attention_reference(q, k, v, cu, max_len, softmax_scale=0.7)
    want = block_diagonal_attention(q, k, v, cu, softmax_scale=0.7)
    torch.testing.assert_close(scaled.double(), want, atol=FP32[0], rtol=FP32[1])


def test_reference_probabilities_are_each_sequences_softmax():
    q, k, v, cu, max_len, _ = packed_qkv([3, 5], heads=2, head_dim=4)
    _, probs = varlen_attention_reference(q, k, v, cu, max_len, return_probs=True)
    assert [tuple(p.shape) for p in probs] == [(2, 3, 3), (2, 5, 5)]
    for p in probs:
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:2]))


def philox_4x32_ints(counter: int, key: tuple[int, int], rounds: int = 7) -> tuple[int, ...]:
    """Philox-4x32 on Python integers, counter (counter, 0, 0, 0): Salmon et al. 2011, as Random123 states it."""
    c, (k0, k1), mask = [counter, 0, 0, 0], key, 0xFFFFFFFF
    for _ in range(rounds):
        b, a = 0xCD9E8D57 * c[2], 0xD2511F53 * c[0]
        c = [(b >> 32) ^ c[1] ^ k0, b & mask, (a >> 32) ^ c[3] ^ k1, a & mask]
        k0, k1 = (k0 + 0x9E3779B9) & mask, (k1 + 0xBB67AE85) & mask
    return tuple(c)


@pytest.mark.parametrize(
    "counter, key, want",
    [  # Random123's known-answer vectors for philox4x32 with 7 rounds (kat_vectors)
        ((0, 0, 0, 0), (0, 0), (0x5F6FB709, 0x0D893F64, 0x4F121F81, 0x4F730A48)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x5207DDC2, 0x45165E59, 0x4D8EE751, 0x8C52F662)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
         (0x4DFCCABA, 0x190A87F0, 0xC47362BA, 0xB6B5242A)),
    ],
)  # fmt: skip
def test_philox_4x32_7_known_answers(counter, key, want):
    """The PyTorch twin's generator at FlashAttention-2's 7 rounds, against Random123's published answers."""
    got = philox_4x32(tuple(torch.tensor([c]) for c in counter), key, rounds=7)
    assert tuple(int(w) for w in got) == want
    if counter[1:] == (0, 0, 0):
        assert philox_4x32_ints(counter[0], key) == want


def test_dropout_keep_threshold():
    """Byte draws: p realised in steps of 1/256, the kept share's inverse as scale (exact expectation)."""
    assert dropout_keep_threshold(0.0) == (0, 1.0)
    assert dropout_keep_threshold(0.1) == (26, 256 / 230)
    assert dropout_keep_threshold(0.5) == (128, 2.0)
    assert dropout_keep_threshold(0.001) == (0, 1.0)  # below half a step: no dropout at all
    assert dropout_keep_threshold(0.9999) == (255, 256.0)


def test_dropout_mask_is_the_documented_philox_draw():
    """Element (head h, query i, key j) takes byte 2 * bit3(i) + bit0(j) of word (j >> 3) & 3 of Philox-4x32-7 at
    counter offset + (h T + start + (i with bit 3 clear)) max_seqlen + (j with bits 0, 3, 4 clear), and is kept when
    that byte is >= round(256 p). Lengths past 32 use every bit of the rule."""
    lengths, heads, p, seed, offset = [40, 9], 2, 0.3, 2**33 + 1234, 17
    threshold = round(256 * p)
    q, k, v, cu, _, _ = packed_qkv(lengths, heads=heads, head_dim=4)
    max_len, total = 45, sum(lengths)  # a max_seqlen above the longest changes the counter stride, not the law
    keep = torch.zeros(heads, total, total, dtype=torch.bool)
    for h in range(heads):
        for start, length in ((0, 40), (40, 9)):
            for i in range(length):
                for j in range(length):
                    counter = offset + (h * total + start + (i & ~8)) * max_len + (j & ~0b11001)
                    word = philox_4x32_ints(counter, (seed & 0xFFFFFFFF, seed >> 32))[(j >> 3) & 3]
                    byte = (word >> (8 * (2 * ((i >> 3) & 1) + (j & 1)))) & 0xFF
                    keep[h, start + i, start + j] = byte >= threshold
    got = varlen_attention_reference(q, k, v, cu, max_len, dropout_p=p, seed=seed, offset=offset)
    want = block_diagonal_attention(q, k, v, cu, dropout_keep=keep, dropout_p=threshold / 256)
    torch.testing.assert_close(got.double(), want, atol=FP32[0], rtol=FP32[1])
    mask = attention_dropout_keep(seed, offset, 40, 9, heads, total, max_len, p, torch.device("cpu"))
    assert torch.equal(mask, keep[:, 40:, 40:])


def test_dropout_keeps_the_expectation():
    """The share kept is 1 - threshold / 256 and the scale its inverse: E[mask * scale] = 1."""
    threshold, scale = dropout_keep_threshold(0.1)
    keep = attention_dropout_keep(3, 0, 0, 256, 4, 256, 256, 0.1, torch.device("cpu"))
    assert abs(keep.float().mean().item() - (1 - threshold / 256)) < 0.005  # 262144 draws: ~6e-4 standard error
    assert abs(keep.float().mean().item() * scale - 1) < 0.006


def test_dropout_is_reproducible_by_seed_and_by_torch_manual_seed():
    q, k, v, cu, max_len, _ = packed_qkv([40, 30], heads=2, head_dim=4)
    run = lambda **kw: varlen_attention(q, k, v, cu, max_len, dropout_p=0.3, backend="reference", **kw)  # noqa: E731
    assert torch.equal(run(seed=5), run(seed=5))
    assert not torch.equal(run(seed=5), run(seed=6))
    torch.manual_seed(0)
    first = run()
    torch.manual_seed(0)
    assert torch.equal(first, run())
    keep = attention_dropout_keep(5, 0, 0, 40, 2, 70, 40, 0.3, torch.device("cpu"))
    assert abs(keep.float().mean().item() - (1 - 77 / 256)) < 0.03  # 3200 draws: the share kept is 1 - 77/256


@pytest.mark.parametrize("case", list(LENGTHS))
def test_sdpa_equals_reference_forward_and_gradients(case):
    q, k, v, cu, max_len, grad_out = packed_qkv(LENGTHS[case], heads=2, head_dim=8)
    want = output_and_grads(varlen_attention_reference, q, k, v, grad_out, cu_seqlens=cu, max_seqlen=max_len)
    got = output_and_grads(varlen_attention, q, k, v, grad_out, cu_seqlens=cu, max_seqlen=max_len + 3, backend="sdpa")
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
        torch.testing.assert_close(g, w, atol=FP32[0], rtol=FP32[1], msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("packed", [False, True], ids=["q, k, v", "fused qkv"])
def test_sdpa_on_a_pack_without_padding_equals_reference(packed):
    """Sequences all max_seqlen long take SDPA's view path (no scatter, no mask): same values and gradients."""
    q, k, v, cu, max_len, grad_out = packed_qkv([6, 6, 6], heads=2, head_dim=8)
    assert q.shape[0] == 3 * max_len
    want = output_and_grads(varlen_attention_reference, q, k, v, grad_out, cu_seqlens=cu, max_seqlen=max_len)
    if packed:
        qkv = torch.stack([q, k, v], dim=1).detach().requires_grad_()
        out = varlen_attention_packed(qkv, cu, max_len, backend="sdpa")
        out.backward(grad_out)
        got = (out, *qkv.grad.unbind(1))
    else:
        got = output_and_grads(varlen_attention, q, k, v, grad_out, cu_seqlens=cu, max_seqlen=max_len, backend="sdpa")
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
        torch.testing.assert_close(g, w, atol=FP32[0], rtol=FP32[1], msg=lambda m, n=name: f"{n}: {m}")


def test_sdpa_dropout_keeps_its_expectation():
    """SDPA draws its own mask: the output over many seeds averages to the dropout-free output."""
    q, k, v, cu, max_len, _ = packed_qkv([4, 3], heads=1, head_dim=4)
    torch.manual_seed(0)
    with torch.no_grad():
        runs = torch.stack([varlen_attention(q, k, v, cu, max_len, dropout_p=0.5, backend="sdpa") for _ in range(400)])
        clean = varlen_attention(q, k, v, cu, max_len, backend="sdpa")
    assert not torch.equal(runs[0], runs[1])
    torch.testing.assert_close(runs.mean(0), clean, atol=0.25, rtol=0)  # 400 draws of p = 0.5: ~0.05 standard error


def test_auto_on_cpu_picks_sdpa_and_says_why_not_the_others():
    q, k, v, cu, max_len, _ = packed_qkv([3, 2], heads=2, head_dim=8)
    assert ATTENTION.select("auto", q, k, v, cu, max_len).name == "sdpa"
    reasons = ATTENTION.not_supported_reasons(q, k, v, cu, max_len)
    assert reasons["sdpa"] == [] and reasons["reference"] == []
    assert "flash-attn" in reasons["flash_attn"][0]
    assert reasons["triton"] == []  # tests run under TRITON_INTERPRET=1; auto passes over it as interpreted
    assert ATTENTION.backends["triton"].skip_reasons(q, k, v, cu, max_len)


def test_a_seeded_mask_rules_out_sdpa_and_auto_falls_back_to_reference():
    q, k, v, cu, max_len, _ = packed_qkv([3, 2], heads=2, head_dim=8)
    reasons = ATTENTION.not_supported_reasons(q, k, v, cu, max_len, 0.1, None, 7)
    assert "a seeded mask needs triton or reference" in reasons["sdpa"][0]
    assert ATTENTION.select("auto", q, k, v, cu, max_len, 0.1, None, 7).name == "reference"
    assert ATTENTION.select("auto", q, k, v, cu, max_len, 0.1, None, None).name == "sdpa"


def test_empty_batch():
    q, k, v = (torch.zeros(0, 2, 8) for _ in range(3))
    for backend in ("reference", "sdpa", "triton"):
        assert varlen_attention(q, k, v, cu_seqlens_of([]), 0, backend=backend).shape == (0, 2, 8)
