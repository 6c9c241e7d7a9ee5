"""The shard index at Conceptual Captions' scale, simulated: 3.3 M records with tiny widths, opened by 8 processes
of 4 workers each, measuring each worker's open time and memory growth (`vlbert-fast bench data`).

    python -m benchmarks.bench_data_scale                    # 3.3 M records -> benchmarks/results/data_scale.csv
    python -m benchmarks.bench_data_scale --smoke            # 20 000 records: checks the script

The records are real ones written by ShardWriter (1-3 boxes each, D = 8 features, C = 4 soft labels, float16, ids
like `cc3m/train/00001234.jpg`): the features are tiny but the index (ids, offsets, image sizes, the sorted id
hashes) is at full scale, and it is what each process opens. Steps:
1. write the records (timed);
2. the first open, which checks the directory and caches the result (shard_checks.py; timed, in its own process);
3. 8 processes ("ranks") start; each forks 4 workers, as a DataLoader does. Every worker measures, from a fresh
   `FeatureShards(directory)` (what a rank does, and more than a forked or spawned worker needs), the wall and CPU
   time of the open and of the first lookup (which maps the index), and its memory: VmRSS before the open, after
   it, and after `--reads` random lookups and reads (RssAnon: memory of its own; RssFile: pages of the memory-mapped
   files, shared with every other process through the page cache; Pss: its fair share of all of them).
All 32 workers run at once, on however few cores the machine has, so wall times include waiting for a core.
4. the same records in format 1 (padded to 3 boxes, every id in index.json), opened by `--padded-workers`
   processes one at a time (each parses the ids and builds a dict of them on its first lookup), measured the
   same way: the index each worker of format 1 held.

Rows (bench "data_scale", op "index_open", provider "ragged" / "padded_v1", x = records): open_time (ms; mode
"first_open": step 2, mode "open": a worker's open, quantiles over the workers, mode "first_lookup"), rss_growth
(MB; mode "open": after the open, mode "open+reads": after the reads; quantiles over the workers, the maximum and
the anon / file / Pss parts in config_json). The records' write time goes into config_json.
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from . import harness

BENCH = "data_scale"


def memory_mb() -> dict[str, float]:
    """VmRSS, RssAnon, RssFile (/proc/self/status) and Pss (/proc/self/smaps_rollup) of this process, in MB."""
    out = {}
    with open("/proc/self/status") as status:
        for line in status:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(line.split()[1]) / 1024
    try:
        with open("/proc/self/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    out["Pss"] = int(line.split()[1]) / 1024
    except OSError:
        out["Pss"] = float("nan")
    return out


def records(n: int, seed: int = 0):
    """The simulated records (module docstring), generated on the fly."""
    from vlbert_fast.data.formats import RegionRecord

    rng = np.random.default_rng(seed)
    boxes = np.array([[4, 6, 120, 90], [30, 10, 200, 160], [0, 0, 639, 479]], np.float32)
    features = rng.standard_normal((64, 3, 8)).astype(np.float32)
    classes = rng.random((64, 3, 4)).astype(np.float32)
    for i in range(n):
        k = 1 + i % 3
        yield RegionRecord(f"cc3m/train/{i:08d}.jpg", 640, 480, boxes[:k], features[i % 64, :k], classes[i % 64, :k])


def write_records(directory: Path, n: int, padded: bool) -> float:
    """The records as ragged shards (ShardWriter) or padded ones (format 1, max_boxes 3); returns the seconds."""
    from vlbert_fast.data.formats.shard_writer import ShardWriter
    from vlbert_fast.data.formats.shards_padded import write_padded_shards

    start = time.perf_counter()
    if padded:
        write_padded_shards(records(n), directory, 8, 4, max_boxes=3, shard_size=4096)
    else:
        with ShardWriter(directory, 8, 4, 100, shard_size=4096) as writer:
            for record in records(n):
                writer.add(record)
    return time.perf_counter() - start


def _worker(directory: str, n: int, reads: int, seed: int, padded: bool, queue) -> None:
    from vlbert_fast.data.formats import FeatureShards
    from vlbert_fast.data.formats.shards_padded import PaddedFeatureShards

    before = memory_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    shards = PaddedFeatureShards(directory) if padded else FeatureShards(directory)
    open_wall, open_cpu = time.perf_counter() - wall, time.process_time() - cpu
    after_open = memory_mb()
    rng = np.random.default_rng(seed)
    wall, cpu = time.perf_counter(), time.process_time()
    shards[f"cc3m/train/{int(rng.integers(n)):08d}.jpg"]
    first_lookup, first_lookup_cpu = time.perf_counter() - wall, time.process_time() - cpu
    for i in rng.integers(0, n, reads):
        record = shards[f"cc3m/train/{int(i):08d}.jpg"]
        assert record.num_boxes == 1 + int(i) % 3
    after_reads = memory_mb()
    queue.put(
        {
            "open_s": open_wall,
            "open_cpu_s": open_cpu,
            "first_lookup_s": first_lookup,
            "first_lookup_cpu_s": first_lookup_cpu,
            "open": {k: after_open[k] - before[k] for k in before},
            "reads": {k: after_reads[k] - before[k] for k in before},
        }
    )


def _rank(directory: str, n: int, reads: int, rank: int, workers: int, queue) -> None:
    import vlbert_fast.data.formats  # noqa: F401  (imported before the fork, as in a training process)

    fork = mp.get_context("fork")
    workers = [
        fork.Process(target=_worker, args=(directory, n, reads, rank * workers + w, False, queue))
        for w in range(workers)
    ]
    for p in workers:
        p.start()
    for p in workers:
        p.join()


def _first_open(directory: str, queue) -> None:
    from vlbert_fast.data.formats import FeatureShards

    start = time.perf_counter()
    FeatureShards(directory)
    queue.put(time.perf_counter() - start)


def quantiles(values) -> tuple[float, float, float]:
    q = np.quantile(np.asarray(values, np.float64), [0.2, 0.5, 0.8])
    return float(q[0]), float(q[1]), float(q[2])


def write_rows(writer, provider: str, n: int, found: list[dict], config: dict) -> None:
    for mode, key, cpu_key in (
        ("open", "open_s", "open_cpu_s"),
        ("first_lookup", "first_lookup_s", "first_lookup_cpu_s"),
    ):
        values = [1e3 * f[key] for f in found]
        extra = {"max_ms": round(max(values), 1), "workers_measured": len(found)}
        extra["cpu_ms_p50"] = round(1e3 * float(np.median([f[cpu_key] for f in found])), 1)
        writer.metric("index_open", provider, mode, "open_time", "records", n, quantiles(values), {**config, **extra})
    for mode, key in (("open", "open"), ("open+reads", "reads")):
        parts = {part: [f[key][part] for f in found] for part in ("VmRSS", "RssAnon", "RssFile", "Pss")}
        extra = {f"{part}_p50": round(float(np.median(v)), 2) for part, v in parts.items()}
        extra |= {f"{part}_max": round(float(np.max(v)), 2) for part, v in parts.items()}
        writer.metric("index_open", provider, mode, "rss_growth", "records", n, quantiles(parts["VmRSS"]),
                      {**config, **extra})  # fmt: skip
    opens, growth = [1e3 * f["open_s"] for f in found], [f["reads"]["VmRSS"] for f in found]
    print(
        f"{provider}: {len(found)} workers: open {np.median(opens):.0f} ms median, {max(opens):.0f} ms max; first "
        f"lookup {1e3 * np.median([f['first_lookup_s'] for f in found]):.0f} ms; RSS growth after "
        f"{config['reads_per_worker']} reads {np.median(growth):.1f} MB median, {max(growth):.1f} MB max (RssAnon "
        f"max {max(f['reads']['RssAnon'] for f in found):.1f} MB)",
        flush=True,
    )


def prepare(directory: Path, n: int, padded: bool) -> float | str:
    """Writes the records unless a finished directory of them is there (--work-dir); the write's seconds."""
    if (directory / "index.json").is_file():
        return "reused"
    shutil.rmtree(directory, ignore_errors=True)
    return round(write_records(directory, n, padded), 1)


def file_bytes(directory: Path, prefix: str) -> int:
    return sum(f.stat().st_size for f in directory.iterdir() if f.name.startswith(prefix))


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__.splitlines()[0], providers=("ragged",), modes=("forward",))
    p.add_argument("--records", type=int, default=None, help="default 3 300 000 (smoke 20 000)")
    p.add_argument("--reads", type=int, default=1000, help="random lookups and reads per worker after the open")
    p.add_argument("--ranks", type=int, default=8, help="processes opening the shards (default 8)")
    p.add_argument("--workers-per-rank", type=int, default=4, help="workers each rank forks (default 4)")
    p.add_argument(
        "--padded-workers", type=int, default=2, help="format 1 at the same scale: processes opening it, one at a "
        "time (each holds every id in Python objects); 0 skips it",
    )  # fmt: skip
    p.add_argument("--work-dir", default=None, help="where the records are written (default: a temp dir, removed)")
    args = p.parse_args(argv)
    n = args.records or (20_000 if args.smoke else 3_300_000)
    results = Path(args.results_dir) if args.results_dir else harness.RESULTS_DIR  # a CPU measurement: it counts
    import torch

    writer = harness.ResultWriter(results, BENCH, torch.device("cpu"))
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="vlbert_fast_bench_scale_"))
    spawn = mp.get_context("spawn")
    queue = spawn.Queue()
    base = {"records": n, "reads_per_worker": args.reads}
    try:
        directory = work / "shards"
        write_s = prepare(directory, n, padded=False)
        (directory / "index.checked.json").unlink(missing_ok=True)
        first = spawn.Process(target=_first_open, args=(str(directory), queue))
        first.start()
        first_open_s = queue.get()
        first.join()
        ranks = [
            spawn.Process(target=_rank, args=(str(directory), n, args.reads, r, args.workers_per_rank, queue))
            for r in range(args.ranks)
        ]
        for rank in ranks:
            rank.start()
        found = [queue.get() for _ in range(args.ranks * args.workers_per_rank)]
        for rank in ranks:
            rank.join()
        config = {**base, "ranks": args.ranks, "workers_per_rank": args.workers_per_rank, "write_s": write_s}
        config |= {"index_bytes": file_bytes(directory, "index."), "shard_bytes": file_bytes(directory, "shard-")}
        writer.metric(
            "index_open", "ragged", "first_open", "open_time", "records", n, (1e3 * first_open_s,) * 3, config
        )
        print(f"ragged: {n:,} records ({config['index_bytes'] / 1e6:.0f} MB of index) written in {write_s} s; first "
              f"open (checks, then cached) {first_open_s:.2f} s", flush=True)  # fmt: skip
        write_rows(writer, "ragged", n, found, config)
        if args.padded_workers:
            directory = work / "padded"
            write_s = prepare(directory, n, padded=True)
            found = []
            for w in range(args.padded_workers):  # one at a time: each holds every id as Python objects
                process = spawn.Process(target=_worker, args=(str(directory), n, args.reads, w, True, queue))
                process.start()
                found.append(queue.get())
                process.join()
            config = {**base, "processes": args.padded_workers, "one_at_a_time": True, "write_s": write_s}
            config |= {"index_bytes": file_bytes(directory, "index."), "shard_bytes": file_bytes(directory, "shard-")}
            write_rows(writer, "padded_v1", n, found, config)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"rows: {writer.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
