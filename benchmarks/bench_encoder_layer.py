"""One post-LN encoder layer: the packed, fused layer against the padded reference layer, in TFLOP/s.

    python -m benchmarks.bench_encoder_layer            # GPU: BERT-Base and -Large layers, ~16k tokens, bf16
    python -m benchmarks.bench_encoder_layer --smoke    # tiny shapes; on a CPU Triton needs TRITON_INTERPRET=1

The batch is the attention benchmark's: sequence lengths uniform in [mean/2, 3 mean/2], about `tokens` tokens.
All providers share one set of weights.

Providers:
- `packed`: `EncoderLayer.forward_packed` with `attention=auto, kernels=auto` (flash-attn or our Triton attention,
  the fused LayerNorm and GELU kernels on a GPU; SDPA and the references on a CPU);
- `packed_triton`: the same with every op on our Triton kernels;
- `reference`: the padded layer (`EncoderLayer.forward` on [B, max, H] with a key mask), what the model ran before;
- `reference_compile`: that layer under torch.compile (`--compile-backend`).

FLOPs on the real tokens only (padding is waste): forward = sum over sequences of
n (2 * 3 H^2 + 2 H^2 + 2 * 2 H I) + 4 n^2 H (QKV, output, FFN; QK^T and PV), as model/flops.py counts a layer;
full = 3 x forward (the backward computes gradients of inputs and weights), backward = 2 x forward.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from vlbert_fast.config import ModelConfig
from vlbert_fast.model.encoder import EncoderLayer
from vlbert_fast.ops.dispatch import triton_reasons

from . import harness
from .bench_attention import varlen_lengths

PROVIDERS = ("packed", "packed_triton", "reference", "reference_compile")
SIZES = {"base": (768, 12, 3072), "large": (1024, 16, 4096), "smoke": (32, 1, 64)}
FULL = {"sizes": ("base", "large"), "means": (128, 256), "tokens": 16384, "dtype": "bfloat16"}
SMOKE = {"sizes": ("smoke",), "means": (6,), "tokens": 12, "dtype": "float32"}
MODE_FACTOR = {"forward": 1.0, "backward": 2.0, "full": 3.0}


def layer_flops(lengths: list[int], hidden: int, intermediate: int) -> float:
    dense = 2 * 3 * hidden * hidden + 2 * hidden * hidden + 2 * 2 * hidden * intermediate
    return float(sum(n * dense + 4 * n * n * hidden for n in lengths))


def workload(provider, cfg, state, x_NH, lengths, device, dtype, compile_backend) -> harness.Workload:
    if provider == "packed_triton":
        reasons = triton_reasons({"x": x_NH})
        if reasons:
            raise harness.Unavailable("; ".join(reasons))
        cfg = dataclasses.replace(cfg, attention="triton", kernels="triton")
    layer = EncoderLayer(cfg).to(device, dtype)
    layer.load_state_dict(state)
    params = list(layer.parameters())
    if provider.startswith("packed"):
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
        x = x_NH.detach().clone().requires_grad_(True)
        return harness.Workload(functools.partial(layer.forward_packed, x, cu, max(lengths)), [x, *params])
    pieces = list(torch.split(x_NH.detach(), lengths))
    x_BLH = torch.nn.utils.rnn.pad_sequence(pieces, batch_first=True).requires_grad_(True)
    mask_BL = torch.arange(x_BLH.shape[1], device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
    forward = layer if provider == "reference" else torch.compile(layer, backend=compile_backend)
    return harness.Workload(functools.partial(forward, x_BLH, mask_BL), [x_BLH, *params])


def main(argv: list[str] | None = None) -> int:
    args = harness.parser(__doc__.splitlines()[0], PROVIDERS).parse_args(argv)
    providers, modes, device, results = harness.resolve(args, PROVIDERS)
    sweep = SMOKE if args.smoke else FULL
    dtype = getattr(torch, sweep["dtype"])
    writer = harness.ResultWriter(results, "encoder_layer", device)
    for size in sweep["sizes"]:
        hidden, heads, intermediate = SIZES[size]
        cfg = ModelConfig(hidden_size=hidden, num_attention_heads=heads, intermediate_size=intermediate,
                          hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)  # fmt: skip
        torch.manual_seed(0)
        state = EncoderLayer(cfg).to(device, dtype).state_dict()
        for mean in sweep["means"]:
            lengths = varlen_lengths(mean, sweep["tokens"])
            x_NH = torch.randn(sum(lengths), hidden, generator=torch.Generator().manual_seed(mean)).to(device, dtype)
            config = {"size": size, "hidden": hidden, "heads": heads, "dtype": sweep["dtype"], "dropout": 0.1}
            config.update(tokens=sum(lengths), sequences=len(lengths), compile_backend=args.compile_backend)
            flops = layer_flops(lengths, hidden, intermediate)
            for provider in providers:
                make = functools.partial(workload, provider, cfg, state, x_NH, lengths, device, dtype,
                                         args.compile_backend)  # fmt: skip
                timings = harness.run_workload(
                    writer, "encoder_layer", provider, make, "mean_seqlen", mean, config, modes, device, args.rep_ms
                )
                for mode, t in timings.items():
                    work = flops * MODE_FACTOR[mode]
                    rates = tuple(work / (ms * 1e-3) / 1e12 for ms in (t.p80, t.p50, t.p20))
                    writer.write("encoder_layer", provider, mode, "throughput", "TFLOP/s", "mean_seqlen", mean,
                                 rates, config)  # fmt: skip
                    print(f"  {'':14}{provider:<18} {mode:<8} {rates[1]:.3g} TFLOP/s")
    print(f"{writer.rows_written} rows appended to {writer.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
