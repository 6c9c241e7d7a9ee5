"""`vlbert-fast demo`: build the configured model and train it a few steps on random batches (forward, backward,
AdamW), printing the losses by part. Real work on generated data, before any dataset exists."""

from __future__ import annotations

import time

import torch

from ..config import RunConfig
from ..data import collate
from ..data.random import random_examples
from ..model import VLBertForPretraining


def run(cfg: RunConfig, steps: int, batch_size: int) -> list[float]:
    torch.manual_seed(cfg.seed)
    model = VLBertForPretraining(cfg.model)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"model: {params / 1e6:.2f} M parameters "
        f"(H={cfg.model.hidden_size}, layers={cfg.model.num_hidden_layers}, heads={cfg.model.num_attention_heads})"
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = collate(random_examples(cfg.model, batch_size, seed=cfg.seed))
    print(f"batch: {batch.num_samples} samples, {int(batch.seq_lens.sum())} tokens, {batch.num_regions} regions")
    history = []
    for step in range(1, steps + 1):
        start = time.perf_counter()
        out = model(batch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        parts = " ".join(f"{k}={v.item():.4f}" for k, v in out.losses.items())
        print(
            f"step {step:3d} loss={out.loss.item():.4f} {parts} grad_norm={grad_norm.item():.3f} "
            f"({(time.perf_counter() - start) * 1e3:.0f} ms)"
        )
        history.append(out.loss.item())
    print(f"loss {history[0]:.4f} -> {history[-1]:.4f} after {steps} steps on one fixed batch")
    return history


HELP = "train the configured model a few steps on random batches"
CONFIG = RunConfig


def add_arguments(parser) -> None:
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps (default 10)")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per batch (default 8)")


def main(args, cfg: RunConfig) -> int:
    history = run(cfg, args.steps, args.batch_size)
    return 0 if history[-1] < history[0] else 1
