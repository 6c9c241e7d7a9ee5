"""`resume: auto` when the newest checkpoint is damaged after its save (a file cut short, as a full disk or an
interrupted copy leaves it): the run passes it over for the previous complete checkpoint, with a warning naming both
and the file, and trains on from there; naming the damaged checkpoint explicitly is an error naming the file."""

import pytest

from .helpers import pretrain_args, python_module, step_losses

pytestmark = pytest.mark.slow  # three 1-process launches, 10-20 s each on 2 cores


def test_a_truncated_latest_falls_back_to_the_previous_checkpoint(tiny_config, ds_env, tmp_path):
    run_dir = tmp_path / "run"
    first = python_module(
        pretrain_args(tiny_config, run_dir, "train.max_steps=4", "engine.save_interval_steps=2", "engine.zero_stage=1"),
        ds_env,
    )
    assert first.returncode == 0, first.tail()
    ckpt = run_dir / "checkpoints"
    (damaged,) = ckpt.glob("step4/*optim_states.pt")
    damaged.write_bytes(damaged.read_bytes()[:100])

    explicit = python_module(
        pretrain_args(
            tiny_config, run_dir, "train.max_steps=6", "engine.zero_stage=1", f"engine.resume={ckpt / 'step4'}"
        ),
        ds_env,
    )
    assert explicit.returncode == 2, explicit.tail()
    assert f"{damaged}: truncated: 100 bytes, the manifest says" in explicit.output, explicit.tail()
    assert "Traceback" not in explicit.output

    resumed = python_module(pretrain_args(tiny_config, run_dir, "train.max_steps=6", "engine.zero_stage=1"), ds_env)
    assert resumed.returncode == 0, resumed.tail()
    assert (
        f"warning: checkpoint {ckpt / 'step4'} is damaged ({damaged}: truncated: 100 bytes, the manifest says"
        in resumed.output
    ), resumed.tail()
    assert f"using the previous complete checkpoint {ckpt / 'step2'} instead" in resumed.output
    assert f"resumed from {ckpt / 'step2'} at step 2" in resumed.output
    assert sorted(step_losses(run_dir)) == list(range(1, 7))
    assert (ckpt / "latest").read_text() == "step6"
