"""Feeding the model: bytes per sample and samples/s of the pretraining loader, ragged shards (format 2) against
the padded ones (format 1), in the same run, on this machine (`vlbert-fast bench data`).

    python -m benchmarks.bench_data                  # both datasets, 0/1/2 workers -> benchmarks/results/data.csv
    python -m benchmarks.bench_data --smoke          # tiny: checks the script, not the numbers

Datasets:
- synthetic: the embedded default's world (data.synth defaults: 3000 captions, 1-2 boxes, D = 128, C = 25);
- butd_like: `--images` generated images with a bottom-up-attention-like box count, 10 + Gamma(1.3, 20) clipped to
  10..100 (mean about 36; the BUTD extractor keeps 10-100 boxes above a confidence threshold), D = 2048 features and
  C = 1601 soft labels in float16, captions of 8-14 words from the world's vocabulary.
Formats, each written from the same records: `ragged` (format 2, exact soft labels: what convert-features writes by
default), `ragged_top{K}` (format 2, top-K soft labels) and `padded` (format 1, every record padded to
max_boxes = 100 for butd_like as `convert-features --max-boxes` defaulted to, the world's own 2 for synthetic).

Rows (bench "data"; op = dataset, provider = format; ours = ragged*, the peer = padded):
- bytes_per_sample (mode "storage", x = records): the directory's bytes (shard files, index arrays, index.json) /
  records: what storage or page cache holds and a reader fetches per image, pages aside;
- samples_per_s (mode "loader", x = workers): image-caption samples per second out of the real pretraining
  DataLoader (build_pretrain_data: shards -> regions -> tokenise, mask, collate; micro batches of 32 rows, half of
  them text-only) with `workers` worker processes, after two warm-up batches; the quantiles are over 5 equal slices
  of the batches; samples_per_cpu_s: the same samples per CPU-second of the main process and its workers (what one
  core loads, whatever else the machine runs). The padded format is read through its own reader
  (shards_padded.PaddedFeatureShards) in the same loader. The files are in the page cache (just written): this
  measures the CPU cost of loading, not the disk;
- samples_per_s and samples_per_cpu_s (mode "reader", x = 0): `shards[image_id]` alone, random ids, one process.
A markdown summary goes beside the CSV (data.md).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from vlbert_fast.config import RunConfig, SynthConfig, load_config
from vlbert_fast.data.formats import (
    CaptionRecord,
    FeatureShards,
    RegionRecord,
    convert_to_shards,
    read_cc_jsonl,
    write_cc_jsonl,
)
from vlbert_fast.data.formats.shard_writer import directory_bytes
from vlbert_fast.data.formats.shards_padded import PaddedFeatureShards, is_padded_directory, write_padded_shards
from vlbert_fast.data.pretrain_loader import build_pretrain_data
from vlbert_fast.data.synth import cached_world

from . import harness

BENCH = "data"


def butd_like_records(n: int, feature_dim: int, num_classes: int, seed: int = 0):
    """RegionRecords with a BUTD-like box count (module docstring), in float32 (the writers store float16)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        count = int(np.clip(np.rint(10 + rng.gamma(1.3, 20.0)), 10, 100))
        w, h = int(rng.integers(400, 801)), int(rng.integers(300, 601))
        x1, y1 = rng.uniform(0, w * 0.7, count), rng.uniform(0, h * 0.7, count)
        x2 = np.minimum(x1 + rng.uniform(8, w * 0.5, count), w - 1)
        y2 = np.minimum(y1 + rng.uniform(8, h * 0.5, count), h - 1)
        features = np.maximum(rng.standard_normal((count, feature_dim), np.float32), 0) * 2.0
        scores = rng.random((count, num_classes), np.float32) ** 12
        yield RegionRecord(
            f"{i:07d}", w, h, np.stack([x1, y1, x2, y2], 1).astype(np.float32), features,
            scores / scores.sum(1, keepdims=True), None,
        )  # fmt: skip


def write_butd_like(root: Path, world: Path, n: int, feature_dim: int, num_classes: int, topk: int) -> dict:
    """A pretraining data root: captions, the world's tokenizer and corpus, and the same records in each format;
    returns format -> shard directory."""
    vocab = sorted({w for r in read_cc_jsonl(world / "cc_train.jsonl") for w in r.caption if w.isalpha()})
    rng = np.random.default_rng(1)
    captions = [
        CaptionRecord(image=f"images.zip@/{i:07d}.jpg", caption=list(rng.choice(vocab, int(rng.integers(8, 15)))))
        for i in range(n)
    ]
    root.mkdir(parents=True)
    write_cc_jsonl(root / "cc_train.jsonl", captions)
    shutil.copytree(world / "tokenizer", root / "tokenizer")
    shutil.copy(world / "corpus.txt", root / "corpus.txt")
    records = lambda: butd_like_records(n, feature_dim, num_classes)  # noqa: E731
    convert_to_shards(records(), root / "ragged", max_boxes=100)
    convert_to_shards(records(), root / f"ragged_top{topk}", max_boxes=100, soft_labels_topk=topk)
    write_padded_shards(records(), root / "padded", feature_dim, num_classes, max_boxes=100)
    return {"ragged": root / "ragged", f"ragged_top{topk}": root / f"ragged_top{topk}", "padded": root / "padded"}


def write_synthetic_formats(world: Path, out: Path, topk: int) -> dict:
    """The world's own shards, and the same records as top-k and as padded shards."""
    shards = FeatureShards(world / "features")
    records = lambda: (shards.record_at(i) for i in range(len(shards)))  # noqa: E731
    convert_to_shards(records(), out / f"ragged_top{topk}", max_boxes=shards.max_boxes, soft_labels_topk=topk)
    write_padded_shards(records(), out / "padded", shards.feature_dim, shards.num_classes, shards.max_boxes)
    return {"ragged": world / "features", f"ragged_top{topk}": out / f"ragged_top{topk}", "padded": out / "padded"}


def open_reader(directory: Path):
    return PaddedFeatureShards(directory) if is_padded_directory(directory) else FeatureShards(directory)


def quantiles_of_rate(samples: list[int], stamps: list[float], start: float) -> tuple[float, float, float]:
    """(p20, p50, p80) of samples/s over 5 equal slices of the batches."""
    edges = np.linspace(0, len(samples), 6).astype(int)
    times = [start, *stamps]
    rates = [sum(samples[a:b]) / (times[b] - times[a]) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
    q = np.quantile(rates, [0.2, 0.5, 0.8])
    return float(q[0]), float(q[1]), float(q[2])


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (/proc/PID/stat), in seconds."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)
    return total / os.sysconf("SC_CLK_TCK")


def loader_rate(cfg: RunConfig, reader, seconds: float) -> tuple[tuple[float, float, float], int, float]:
    """Image-caption samples/s of the pretraining loader (module docstring), the batches measured, and the samples
    per CPU-second of the loading processes (this one and its workers): what a core of this machine loads, however
    loaded the machine is."""
    data = build_pretrain_data(cfg)
    data.captions.regions.shards = reader  # the format under test, in the same loader
    per_epoch, epoch, taken = len(data.loader), 0, 0
    data.set_epoch(epoch)
    batches = iter(data.loader)
    worker_cpu = [0.0]  # CPU of the workers of finished epochs, read after their last batch while they still exist

    def workers() -> list[int]:
        return [w.pid for w in getattr(batches, "_workers", [])]

    def next_batch(measuring: bool):
        nonlocal batches, epoch, taken
        if taken == per_epoch:  # a new epoch: new workers (the old ones exit with their iterator)
            if measuring:
                worker_cpu[0] += cpu_seconds(workers())
            epoch, taken = epoch + 1, 0
            data.set_epoch(epoch)
            batches = iter(data.loader)
        taken += 1
        return next(batches)

    for _ in range(2):
        next_batch(measuring=False)
    worker_cpu[0] -= cpu_seconds(workers())
    main_cpu = time.process_time()
    samples, stamps = [], []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(samples) < 5:
        loaded = next_batch(measuring=True)
        samples.append(int(loaded.batch.has_image.sum()))
        stamps.append(time.perf_counter())
    cpu = time.process_time() - main_cpu + worker_cpu[0] + cpu_seconds(workers())
    batches = None  # stops the workers
    return quantiles_of_rate(samples, stamps, start), len(samples), sum(samples) / max(cpu, 1e-9)


def reader_rate(reader, ids: list[str], seconds: float) -> tuple[tuple[float, float, float], float]:
    """Samples/s of `reader[image_id]` over random ids, and samples per CPU-second."""
    rng = np.random.default_rng(0)
    samples, stamps = [], []
    cpu = time.process_time()
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(samples) < 5:
        for i in rng.integers(0, len(ids), 64):
            reader[ids[i]]
        samples.append(64)
        stamps.append(time.perf_counter())
    return quantiles_of_rate(samples, stamps, start), sum(samples) / (time.process_time() - cpu)


def run_dataset(writer, name: str, root: Path, formats: dict, overrides: list[str], workers, seconds, summary):
    ids = list(FeatureShards(formats["ragged"]).image_ids)
    padded_bytes = directory_bytes(formats["padded"]) / len(ids)
    for fmt, directory in formats.items():
        reader = open_reader(directory)
        per_sample = directory_bytes(directory) / len(ids)
        config = {"dataset": name, "format": fmt, "directory_bytes": directory_bytes(directory), "records": len(ids)}
        writer.metric(name, fmt, "storage", "bytes_per_sample", "records", len(ids), (per_sample,) * 3, config)
        print(f"  {name} {fmt:<14} {per_sample:>12,.0f} bytes/sample ({padded_bytes / per_sample:.2f}x padded)")
        row = {"bytes": per_sample, "vs_padded": padded_bytes / per_sample, "loader": {}}
        rate, per_cpu = reader_rate(reader, ids, seconds)
        writer.metric(name, fmt, "reader", "samples_per_s", "workers", 0, rate, config)
        writer.metric(name, fmt, "reader", "samples_per_cpu_s", "workers", 0, (per_cpu,) * 3, config)
        row["reader"], row["reader_cpu"] = rate[1], per_cpu
        for n in workers:
            cfg = load_config(RunConfig, overrides=[*overrides, f"data.root={root}", f"data.num_workers={n}"])
            rate, batches, per_cpu = loader_rate(cfg, reader, seconds)
            point = {**config, "batches": batches}
            writer.metric(name, fmt, "loader", "samples_per_s", "workers", n, rate, point)
            writer.metric(name, fmt, "loader", "samples_per_cpu_s", "workers", n, (per_cpu,) * 3, point)
            print(f"  {name} {fmt:<14} loader, {n} workers: {rate[1]:,.0f} samples/s, {per_cpu:,.0f} per CPU-second")
            row["loader"][n] = (rate[1], per_cpu)
        summary.append((name, fmt, row))


def write_summary(path: Path, summary, workers, device_name: str, command: str) -> None:
    head = ["dataset", "format", "bytes/sample", "padded / this", "reader samples/s (per CPU-s)"]
    head += [f"loader, {n} workers: samples/s (per CPU-s)" for n in workers]
    lines = [
        "# Feeding the model: bytes per sample and loader throughput",
        "",
        f"`{command}` on {device_name}, load average {os.getloadavg()[0]:.1f} at the end (rows: data.csv). Bytes: "
        "the shard directory / records. Samples/s: image-caption samples out of the pretraining DataLoader, files "
        "in the page cache; per CPU-s: samples per CPU-second of the loading processes (main and workers).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, fmt, row in summary:
        cells = [name, fmt, f"{row['bytes']:,.0f}", f"{row['vs_padded']:.2f}x"]
        cells.append(f"{row['reader']:,.0f} ({row['reader_cpu']:,.0f})")
        cells += [f"{row['loader'][n][0]:,.0f} ({row['loader'][n][1]:,.0f})" for n in workers]
        lines.append("| " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__.splitlines()[0], providers=("ragged", "padded"), modes=("forward",))
    p.add_argument("--workers", default="0,1,2", help="DataLoader workers to measure (comma-separated)")
    p.add_argument("--seconds", type=float, default=None, help="per point (default 10, smoke 0.5)")
    p.add_argument("--images", type=int, default=None, help="butd_like images (default 1000, smoke 24)")
    p.add_argument("--topk", type=int, default=10, help="K of the top-k format (at most C - 1)")
    p.add_argument("--work-dir", default=None, help="where the datasets are written (default: a temp dir, removed)")
    args = p.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",") if w]
    seconds = args.seconds if args.seconds is not None else (0.5 if args.smoke else 10.0)
    images = args.images if args.images is not None else (24 if args.smoke else 1000)
    results = Path(args.results_dir) if args.results_dir else harness.RESULTS_DIR  # a CPU measurement: it counts
    import torch

    device = torch.device("cpu")
    writer = harness.ResultWriter(results, BENCH, device)
    synth = SynthConfig(train_images=40, val_images=4, corpus_lines=20) if args.smoke else SynthConfig()
    world = cached_world(synth)
    synth_overrides = [f"data.synth.{k}={v}" for k, v in vars(synth).items()]
    feature_dim, num_classes = (64, 50) if args.smoke else (2048, 1601)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="vlbert_fast_bench_data_"))
    summary: list = []
    try:
        world_formats = write_synthetic_formats(world, work / "synthetic", min(args.topk, 24))
        world_overrides = [*synth_overrides, "train.micro_batch_size=32", "train.global_batch_size=32"]
        # the default world root is the cache; data.root points the loader at it explicitly
        run_dataset(writer, "synthetic", world, world_formats, world_overrides, workers, seconds, summary)
        butd = write_butd_like(work / "butd_like", world, images, feature_dim, num_classes, min(args.topk, 24))
        butd_overrides = [
            *synth_overrides, "data.features=ragged", "data.val_captions=", "data.probe_words=",
            f"model.visual_feature_dim={feature_dim}", f"model.num_roi_classes={num_classes}",
            "train.micro_batch_size=32", "train.global_batch_size=32",
        ]  # fmt: skip
        run_dataset(writer, "butd_like", work / "butd_like", butd, butd_overrides, workers, seconds, summary)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    command = "vlbert-fast bench data" + (" --smoke" if args.smoke else "")
    write_summary(results / "data.md", summary, workers, writer.env["device"], command)
    print(f"rows: {writer.path}, summary: {results / 'data.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
