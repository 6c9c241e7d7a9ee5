import pytest

from vlbert_fast.config import SynthConfig
from vlbert_fast.data.synth import generate


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """A small synthetic world on disk (seconds), in every real format: the good records around the bad ones."""
    cfg = SynthConfig(train_images=8, val_images=4, corpus_lines=10, max_objects=2, seed=5)
    return generate(cfg, tmp_path_factory.mktemp("synth") / "world")
