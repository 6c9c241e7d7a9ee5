"""Test setup. TRITON_INTERPRET must be set before any kernel module is imported (it is read when @triton.jit
runs), so it is set here, first. DeepSpeed is told to use its CPU accelerator quietly."""

import os
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from vlbert_fast.config import ModelConfig  # noqa: E402

from .shared import once, output_tail, run_cli  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run `pytest -m gpu` on the GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_cfg() -> ModelConfig:
    """A small model with dropout off, so outputs are deterministic, and the original's zero visual gains."""
    return ModelConfig(
        visual_scale_text_init=0.0,
        visual_scale_object_init=0.0,
        vocab_size=211,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=64,
        visual_feature_dim=40,
        geometry_dim=32,
        num_roi_classes=17,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        visual_dropout=0.0,
    )


@pytest.fixture(scope="session")
def session_shared_dir(tmp_path_factory, worker_id) -> Path:
    """A directory every xdist worker of this session sees (the base temp directory's parent under xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if worker_id != "master" else base


@pytest.fixture(scope="session")
def synth_cache(session_shared_dir) -> Path:
    """The VLBERT_FAST_CACHE of the session's embedded-default runs (the synthetic world and the synthetic tasks)."""
    path = session_shared_dir / "synth_cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def pretrained_default(session_shared_dir, synth_cache) -> Path:
    """The embedded default pretraining (`vlbert-fast pretrain`, no arguments), run once per test session and shared
    by every test and xdist worker that needs it (the learning tests of pretraining and of each fine-tuning task).
    Returns the run directory; its stdout is in `pretrain.log` beside it. The world is in `synth_cache`."""

    def make(directory: Path) -> None:
        # the timeout: ~3 min on an idle 2-core machine, 50 min seen on one loaded by other jobs
        result = run_cli(["pretrain", f"run_dir={directory / 'run'}"], synth_cache, timeout=5400)
        (directory / "pretrain.log").write_text(result.stdout + result.stderr)
        assert result.returncode == 0, output_tail(result)

    return once(session_shared_dir, "pretrained_default", make) / "run"
