"""Process-group setup that works the same under plain python, torchrun and the deepspeed launcher, plus the
run-wide switches that must be set before any work: thread count, deterministic algorithms, timeouts.

Launchers set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. A plain `python` process has none of them,
and DeepSpeed would then look for MPI; so a lone process sets them itself (rank 0 of 1, a free loopback port).
On a machine without CUDA, DeepSpeed is told to use its CPU accelerator (gloo) before it is imported.

Failure of another rank: gloo notices a dead peer at once (its TCP connection resets) and a hung one after
`timeout`; NCCL's watchdog aborts a collective after `timeout` as well. Either way a collective raises on the
surviving ranks, and `comm_failure_message` turns that into a message a user can act on.

At the end of a run, however it ends, `close_distributed` destroys the process group the run created, while the
interpreter is still whole: left to the interpreter's finalization, gloo's worker threads can outlive it and abort
the process (SIGABRT, "terminate called without an active exception") after the run has finished its work
(pytorch/pytorch#190489). Seen once here: a 2-rank run that had aborted as it should (exit status 1) died with -6.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.distributed.distributed_c10d as c10d

from ..config import EngineConfig
from ..model.safe_load import prefer_cpu_accelerator


@dataclass
class DistInfo:
    rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False
    """Whether `init_distributed` created the process group (and `close_distributed` destroys it)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_environment() -> None:
    """Sets the variables DeepSpeed needs before it is imported (idempotent)."""
    prefer_cpu_accelerator()
    if "RANK" not in os.environ and "OMPI_COMM_WORLD_RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))


def cpu_threads(cfg: EngineConfig, data_workers: int = 0) -> int:
    """The intra-op thread count of this rank: `cfg.cpu_threads`, or with 0 on a machine without CUDA, torch's
    default less one per data-loader worker, at least 1 (on a GPU machine, torch's default). Measured on 2 cores
    with the embedded default, whose one worker loads batches beside the training process: 2 threads plus the
    worker ran 40 steps in 136 s while other work kept the machine busy, 1 thread in 15 s: a parallel region waits
    for its slowest thread, and with more threads than free cores some thread is always descheduled."""
    if cfg.cpu_threads:
        return cfg.cpu_threads
    if torch.cuda.is_available():
        return torch.get_num_threads()
    return max(1, torch.get_num_threads() - data_workers)


def configure_determinism(cfg: EngineConfig, data_workers: int = 0) -> None:
    """Thread count and deterministic kernels; called before the first tensor operation of the run."""
    torch.set_num_threads(cpu_threads(cfg, data_workers))
    if cfg.deterministic:
        # cuBLAS picks reduction orders by workspace; a fixed workspace makes its GEMMs repeatable.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        # Deterministic mode also fills every torch.empty with NaN, to expose reads of uninitialised memory. DeepSpeed
        # allocates its ZeRO buckets with torch.empty (up to reduce_bucket_size elements), so the fill would touch
        # gigabytes page by page and cost seconds per step; it is a debugging aid, not needed for repeatable results.
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = False


def skip_shared_memory_op() -> None:
    """Tells DeepSpeed not to build nor load its CPU shared-memory all-reduce op (`deepspeed_shm_comm`). Its process
    group on the CPU accelerator builds the op whenever its op table (`deepspeed.ops.__compatible_ops__`, probed once
    per process) marks it compatible, which it does on Linux; yet only `inference_all_reduce`, which the
    tensor-parallel inference layers of deepspeed.module_inject call, ever uses it: training's collectives go through
    torch.distributed (gloo) with or without it. The build cost 28 s on 2 cores in every fresh environment, and a
    build killed half-way left torch's lock file behind, on which every later run waited without a word. The entry set
    False here makes DeepSpeed skip it, as on a machine where the op cannot be built."""
    import deepspeed.ops

    compatible = deepspeed.ops.__compatible_ops__
    if "deepspeed_shm_comm" in compatible:
        compatible["deepspeed_shm_comm"] = False


def init_distributed(cfg: EngineConfig | None = None, data_workers: int = 0) -> DistInfo:
    """The process group (module docstring) and the run-wide switches; `data_workers`: the data loader's worker
    processes of this rank, which the automatic thread count leaves their cores."""
    cfg = cfg or EngineConfig()
    prepare_environment()
    configure_determinism(cfg, data_workers)
    import deepspeed

    skip_shared_memory_op()  # before DeepSpeed makes its communication backend, here or in deepspeed.initialize
    timeout = timedelta(seconds=cfg.dist_timeout_s)
    owns_group = not dist.is_initialized()  # a group the caller made stays the caller's
    if owns_group:
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo", timeout=timeout)
    # DeepSpeed makes its own groups (data parallel, ZeRO partitions) with new_group() and no timeout, which torch
    # fills in from these module attributes (30 min for gloo, 10 for NCCL), not from the world group's: a hung rank
    # would stall the others for that long. Torch reads them each time a group is made.
    c10d.default_pg_timeout = timeout
    c10d.default_pg_nccl_timeout = timeout
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return DistInfo(dist.get_rank(), dist.get_world_size(), device, owns_group)


def close_distributed(info: DistInfo) -> None:
    """Destroys the process group `init_distributed` created (module docstring); a failure to do so is reported on
    stderr and does not replace the run's own outcome."""
    if not (info.owns_group and dist.is_initialized()):
        return
    try:
        dist.destroy_process_group()
    except Exception as exc:  # the run's result or error stands
        print(f"vlbert_fast: rank {info.rank}: destroying the process group failed: {exc}", file=sys.stderr, flush=True)


# Substrings of the errors gloo, NCCL and the c10d store raise when a peer is gone or silent.
_COMM_ERROR_MARKERS = ("gloo", "nccl", "connection reset", "connection closed", "timed out", "timeout", "broken pipe")


def is_comm_failure(exc: BaseException) -> bool:
    """Whether `exc` looks like a failed collective (another rank died, hung or lost its network)."""
    dist_error = getattr(torch.distributed, "DistError", None)
    if dist_error is not None and isinstance(exc, dist_error):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(marker in text for marker in _COMM_ERROR_MARKERS)


def comm_failure_message(info: DistInfo, step: int, timeout_s: float, exc: BaseException) -> str:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"rank {info.rank} of {info.world_size}: distributed communication failed at step {step}: another rank "
        f"probably died or hung (collectives wait at most engine.dist_timeout_s = {timeout_s:g} s); look at the "
        f"other ranks' logs for the first error. {type(exc).__name__}: {first_line}"
    )


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sums a few numbers over all ranks (a no-op on one rank), in float64."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()


def all_gather_objects(obj, info: DistInfo) -> list:
    """Every rank's `obj` (picklable), in rank order, on every rank (a list of one on a single rank)."""
    if info.world_size == 1:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
