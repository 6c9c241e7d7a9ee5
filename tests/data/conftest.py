import pytest

from vlbert_fast.config import SynthConfig
from vlbert_fast.data.synth import generate


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """A small synthetic world on disk (seconds), in every real format."""
    cfg = SynthConfig(train_images=40, val_images=10, corpus_lines=30, max_objects=4, seed=3)
    return generate(cfg, tmp_path_factory.mktemp("synth") / "world")
