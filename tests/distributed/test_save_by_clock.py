"""The clock rule in a real run: two ranks under ZeRO-2 (whose save is collective) save whenever either rank's clock
says an interval has passed, and the run ends normally, every save at the same step on both ranks (a rank deciding
alone would leave the other waiting in the save's collectives until engine.dist_timeout_s)."""

import pytest

from .helpers import pretrain_args, torchrun

pytestmark = pytest.mark.slow  # one 2-process launch, about 10-30 s on 2 cores


def test_two_ranks_save_by_the_clock_at_the_same_steps(tiny_config, ds_env, tmp_path):
    run_dir = tmp_path / "run"
    overrides = ("engine.zero_stage=2", "engine.keep_last_k=0", "train.max_steps=4")
    # 0.0001 min = 6 ms: some rank's clock passes it at every step, while the ranks' clocks disagree by milliseconds
    args = pretrain_args(tiny_config, run_dir, *overrides, "engine.save_interval_minutes=0.0001")
    result = torchrun(args, ds_env)
    assert result.returncode == 0, result.tail()
    tags = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step"))
    assert tags == ["step1", "step2", "step3", "step4"]
    for step in (1, 2, 3):
        assert f"step {step}: checkpoint {run_dir / 'checkpoints' / f'step{step}'} (0.0001 min since" in result.output
    assert f"step 4: checkpoint {run_dir / 'checkpoints' / 'step4'} (the end of the run)" in result.output
