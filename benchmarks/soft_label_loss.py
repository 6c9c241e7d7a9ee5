"""What top-k soft labels cost the masked-RoI objective, measured on the synthetic world: the embedded default run
trained with exact soft labels and with top-K ones, each model then scored on the held-out captions against the
exact labels.

    python -m benchmarks.soft_label_loss                      # exact, top-2, top-1; the default 1200 steps each
    python -m benchmarks.soft_label_loss --topk 2 --steps 300 # shorter

For each label mode: a data root beside the cached world (its captions, corpus and tokenizer, linked) whose
`features` are the world's records written with `soft_labels_topk=K` (exact: the world's own shards); then
`vlbert-fast pretrain data.root=THAT run_dir=...` in its own process (the real command, DeepSpeed on the CPU, every
other setting the embedded default's). Each trained model is scored on the held-out captions, masked as in training
(seeded: every model sees the same masked regions), by the masked-RoI soft cross-entropy against the exact labels
and against the run's own (top-K) labels, and by the probe-word accuracy the run reported (real and shuffled
images). The world's labels put the true class first, background second and the same shape's other colours after
(data/synth/world.py `detections`): top-2 keeps the true class and background, top-1 makes labels hard.

Rows (bench "soft_labels", op "roi_loss" / "probe_accuracy", provider "exact" / "top{K}", x = steps) go to
benchmarks/results/soft_labels.csv (a CPU measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from vlbert_fast.config import RunConfig, load_config
from vlbert_fast.data import collate
from vlbert_fast.data.caption_dataset import Skipped
from vlbert_fast.data.formats import FeatureShards, convert_to_shards
from vlbert_fast.data.formats.shard_layout import dense_soft_labels, top_k_soft_labels
from vlbert_fast.data.pretrain_loader import build_pretrain_data
from vlbert_fast.data.synth import cached_world
from vlbert_fast.model import from_pretrained
from vlbert_fast.model.heads import soft_cross_entropy

from . import harness

BENCH = "soft_labels"
LINKED = ("cc_train.jsonl", "cc_val.jsonl", "corpus.txt", "tokenizer", "probe_words.txt", "world.json")


def data_root(world: Path, out: Path, topk: int | None) -> Path:
    """A pretraining data root with the world's files and its records' soft labels exact or top-K."""
    out.mkdir(parents=True)
    for name in LINKED:
        (out / name).symlink_to(world / name)
    if topk is None:
        (out / "features").symlink_to(world / "features")
    else:
        shards = FeatureShards(world / "features")
        records = (shards.record_at(i) for i in range(len(shards)))
        convert_to_shards(records, out / "features", max_boxes=shards.max_boxes, soft_labels_topk=topk)
    return out


def label_mass_kept(world: Path, k: int) -> float:
    """Mean over the world's boxes of the exact probability mass of each box's k likeliest classes (what top-k keeps
    before renormalising), in %."""
    shards = FeatureShards(world / "features")
    classes = np.concatenate([shards.record_at(i).classes for i in range(len(shards))])
    return 100 * float(np.sort(classes, axis=1)[:, ::-1][:, :k].sum(1).mean())


def train(root: Path, run_dir: Path, steps: int | None) -> dict:
    args = [f"data.root={root}", f"run_dir={run_dir}"] + ([f"train.max_steps={steps}"] if steps else [])
    result = subprocess.run([sys.executable, "-m", "vlbert_fast", "pretrain", *args], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"pretrain {args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return json.loads((run_dir / "summary.json").read_text())


@torch.no_grad()
def roi_losses(run_dir: Path, exact_root: Path, topk: int | None, batches: int, rows: int) -> tuple[float, float]:
    """(masked-RoI soft cross-entropy against the exact labels, against the run's own labels), mean over masked
    regions of the held-out captions, masked as in training at a fixed seed."""
    model = from_pretrained(run_dir)
    cfg = load_config(RunConfig, [run_dir / "config.yaml"], overrides=[f"data.root={exact_root}", "data.num_workers=0"])
    val = build_pretrain_data(cfg).val
    val.masking = True
    exact_sum = own_sum = 0.0
    count = 0
    for start in range(0, min(len(val), batches * rows), rows):
        examples = [val[i] for i in range(start, min(start + rows, len(val)))]
        batch = collate([e for e in examples if not isinstance(e, Skipped)])
        out = model(batch)
        if out.roi_logits is None or out.roi_logits.shape[0] == 0:
            continue
        targets = batch.roi_targets[batch.region_predict]
        own = targets
        if topk is not None:
            ids, probs = top_k_soft_labels(targets.numpy(), topk)
            own = torch.from_numpy(dense_soft_labels(ids, probs, targets.shape[1]))
        m = targets.shape[0]
        exact_sum += float(soft_cross_entropy(out.roi_logits, targets)) * m
        own_sum += float(soft_cross_entropy(out.roi_logits, own)) * m
        count += m
    return exact_sum / count, own_sum / count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--topk", default="2,1", help="K values to compare with exact labels (comma-separated)")
    p.add_argument("--steps", type=int, default=None, help="train.max_steps of each run (default: the default's)")
    p.add_argument("--val-batches", type=int, default=20, help="held-out batches of --val-rows captions scored")
    p.add_argument("--val-rows", type=int, default=16)
    p.add_argument("--results-dir", default=None, help="default benchmarks/results")
    p.add_argument("--work-dir", default=None, help="data roots and runs (default: a temp dir, kept for inspection)")
    p.add_argument("--labels-only", action="store_true", help="only the label mass each K keeps; no training")
    args = p.parse_args(argv)
    world = cached_world(load_config(RunConfig).data.synth)
    writer = harness.ResultWriter(Path(args.results_dir or harness.RESULTS_DIR), BENCH, torch.device("cpu"))
    modes = [None] + [int(k) for k in args.topk.split(",") if k]
    for k in modes[1:]:
        kept = label_mass_kept(world, k)
        writer.metric("label_mass_kept", f"top{k}", "world", "label_mass", "k", k, (kept,) * 3, {"labels": f"top{k}"})
        print(f"  top{k}: keeps {kept:.1f}% of the exact label mass per box (mean over the world's boxes)", flush=True)
    if args.labels_only:
        return 0
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="vlbert_fast_soft_labels_"))
    exact_root = data_root(world, work / "data_exact", None)
    for topk in modes:
        name = "exact" if topk is None else f"top{topk}"
        root = exact_root if topk is None else data_root(world, work / f"data_{name}", topk)
        summary = train(root, work / f"run_{name}", args.steps)
        against_exact, against_own = roi_losses(work / f"run_{name}", exact_root, topk, args.val_batches, args.val_rows)
        steps = summary["steps"]
        config = {"labels": name, "steps": steps, "train_seconds": round(summary["train_seconds"], 1),
                  "final_train_roi_loss": summary["final_losses"]["roi"], "threads": os.cpu_count()}  # fmt: skip
        writer.metric("roi_loss", name, "val_vs_exact", "loss", "steps", steps, (against_exact,) * 3, config)
        writer.metric("roi_loss", name, "val_vs_own", "loss", "steps", steps, (against_own,) * 3, config)
        accuracy = summary["masked_word_accuracy"]
        for image in ("real", "shuffled"):
            value = (100 * accuracy[image],) * 3
            writer.metric("probe_accuracy", name, image, "accuracy", "steps", steps, value, config)
        print(
            f"{name:>6}: masked-RoI loss on held-out captions {against_exact:.4f} against exact labels, "
            f"{against_own:.4f} against its own; probe words {100 * accuracy['real']:.1f}% real, "
            f"{100 * accuracy['shuffled']:.1f}% shuffled ({steps} steps, {summary['train_seconds']:.0f} s)",
            flush=True,
        )
    print(f"rows: {writer.path}; runs in {work}")
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    raise SystemExit(main())
