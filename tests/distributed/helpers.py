"""Launching multi-process runs from the tests: a pair of plain processes (RANK/WORLD_SIZE set by us), torchrun
on one node or as two "nodes" on loopback, and the deepspeed launcher in module form. Every launch is bounded by a
timeout and its output kept for the assertion messages."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
LAUNCH_TIMEOUT_S = 300  # far above a normal launch (5-30 s on 2 loaded cores): only a hang reaches it

# The tiny world and model every distributed test trains: each launch costs seconds of imports, the steps are free.
TINY_YAML = """\
model:
  hidden_size: 32
  num_hidden_layers: 2
  num_attention_heads: 2
  intermediate_size: 64
  geometry_dim: 64
data:
  num_workers: 0
  synth:
    train_images: 64
    val_images: 8
    corpus_lines: 64
train:
  max_steps: 8
  global_batch_size: 8
  micro_batch_size: 4
  warmup_steps: 2
  log_every: 1
  eval_batches: 0
engine:
  deterministic: true
  cpu_threads: 1
  dist_timeout_s: 60
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Result:
    returncode: int
    output: str
    seconds: float

    def tail(self, chars: int = 4000) -> str:
        return self.output[-chars:]


def run_command(cmd: list[str], env: dict, timeout: float = LAUNCH_TIMEOUT_S) -> Result:
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start)


def pretrain_args(config: Path, run_dir: Path, *overrides: str) -> list[str]:
    return ["pretrain", "--config", str(config), f"run_dir={run_dir}", *overrides]


def python_module(args: list[str], env: dict, extra_env: dict | None = None) -> Result:
    """`python -m vlbert_fast ARGS` as a lone process (rank 0 of 1)."""
    return run_command([sys.executable, "-m", "vlbert_fast", *args], {**env, **(extra_env or {})})


def torchrun(args: list[str], env: dict, nproc: int = 2, extra_env: dict | None = None) -> Result:
    cmd = [str(BIN / "torchrun"), "--nproc_per_node", str(nproc), "--master_port", str(free_port())]
    return run_command([*cmd, "-m", "vlbert_fast", *args], {**env, **(extra_env or {})})


def deepspeed_launcher(args: list[str], env: dict, nproc: int = 2, extra_env: dict | None = None) -> Result:
    cmd = [str(BIN / "deepspeed"), "--num_gpus", str(nproc), "--master_port", str(free_port()), "--module"]
    return run_command([*cmd, "vlbert_fast", *args], {**env, **(extra_env or {})})


def spawn_ranks(cmd: list[str], env: dict, world_size: int = 2, per_rank_env: dict | None = None) -> list:
    """One plain process per rank with the variables a launcher would set; returns the Popen objects."""
    port = str(free_port())
    procs = []
    for rank in range(world_size):
        rank_env = {
            **env,
            "RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            **((per_rank_env or {}).get(rank, {})),
        }
        procs.append(subprocess.Popen(cmd, env=rank_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def wait_all(procs: list, timeout: float = LAUNCH_TIMEOUT_S) -> list[Result]:
    start = time.monotonic()
    results = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=max(1.0, timeout - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        results.append(Result(proc.returncode, out, time.monotonic() - start))
    return results


def wait_first(procs: list, rank: int, timeout: float) -> tuple[Result, float]:
    """Waits for process `rank` only (the others may be hung on purpose); returns its result and the wall-clock time
    (time.time()) at which it was seen to exit, to 0.1 s."""
    start = time.monotonic()
    proc = procs[rank]
    while proc.poll() is None and time.monotonic() - start < timeout:
        time.sleep(0.1)
    ended = time.time()
    if proc.poll() is None:
        proc.kill()
    out, _ = proc.communicate()
    return Result(proc.returncode, out, time.monotonic() - start), ended


def fault_time(output: str) -> float:
    """When the injected fault fired: the time.time() its message carries."""
    for line in output.splitlines():
        if line.startswith("[fault injection]") and "(at " in line:
            return float(line.rsplit("(at ", 1)[1].rstrip(")"))
    raise AssertionError(f"no fault injection message in:\n{output[-3000:]}")


def two_nodes(args: list[str], env: dict) -> list[Result]:
    """Two torchrun "nodes" of one process each on this machine, meeting at a c10d rendezvous on loopback."""
    endpoint = f"127.0.0.1:{free_port()}"
    procs = []
    for node in range(2):
        cmd = [
            str(BIN / "torchrun"),
            "--nnodes",
            "2",
            "--nproc_per_node",
            "1",
            "--node_rank",
            str(node),
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            endpoint,
            "--rdzv-id",
            f"vlbert-test-{os.getpid()}",
            "-m",
            "vlbert_fast",
            *args,
        ]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return wait_all(procs)


def step_losses(run_dir: Path) -> dict[int, dict]:
    """step -> {loss, loss/...} from metrics.jsonl (exact floats, as logged)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss" in r]  # training rows (an evaluation's row has val/ keys instead)
    return {r["step"]: {k: v for k, v in r.items() if k == "loss" or k.startswith("loss/")} for r in rows}


def logged_losses(output: str) -> dict[int, str]:
    """step -> the loss part of its log line, from a process's output."""
    out = {}
    for line in output.splitlines():
        if " step " in line and "| loss " in line:  # "<date> <time> step N/M | ETA ... | loss ..."
            step = int(line.split(" step ")[1].split("/")[0])
            out[step] = line.split("| loss ")[1].split(" | ")[0]
    return out
