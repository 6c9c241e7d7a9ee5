"""What a CPU run sets up before its first step: the thread count that leaves the data workers their cores, and no
build of DeepSpeed's shared-memory op, which only DeepSpeed's inference layers use (tests/distributed/test_launchers.py
checks that no rank of a 2-rank run builds it)."""

import deepspeed.ops
import pytest
import torch

from vlbert_fast.config import EngineConfig
from vlbert_fast.engine.distributed import cpu_threads, skip_shared_memory_op


@pytest.fixture
def cores(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # torch's default on a 2-core machine


def test_automatic_threads_leave_each_data_worker_a_core(cores):
    assert cpu_threads(EngineConfig(), data_workers=1) == 1
    assert cpu_threads(EngineConfig(), data_workers=0) == 2
    assert cpu_threads(EngineConfig(), data_workers=4) == 1  # never below one
    assert cpu_threads(EngineConfig(cpu_threads=3), data_workers=1) == 3  # a fixed count is kept


def test_a_gpu_machine_keeps_torchs_default(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    assert cpu_threads(EngineConfig(), data_workers=2) == 16


def test_deepspeeds_shared_memory_op_is_never_built(monkeypatch):
    from deepspeed.comm.torch import build_shm_op

    compatible = deepspeed.ops.__compatible_ops__
    monkeypatch.setitem(compatible, "deepspeed_shm_comm", True)  # as on a machine that can build it
    built = []
    monkeypatch.setattr("deepspeed.ops.op_builder.builder.OpBuilder.load", lambda self, *a, **k: built.append(self))
    skip_shared_memory_op()
    assert compatible["deepspeed_shm_comm"] is False
    assert build_shm_op() is None and built == []
