"""The checkpoint directory protocol without a process group: which checkpoint a path names, `latest` only on
complete ones, a damaged one passed over for the previous with a warning, the manifest, pruning, the config guard,
and metrics.jsonl after a resume."""

import json

import pytest

from vlbert_fast.config import RunConfig, load_config, to_dict
from vlbert_fast.config.config_hash import RESUME_FREE_KEYS, config_diff, config_hash
from vlbert_fast.engine.checkpoint import ConfigChangedError, check_config, prune, resolve_resume
from vlbert_fast.engine.metrics import truncate_jsonl
from vlbert_fast.model.checkpoint_dir import (
    LATEST,
    MARKER,
    CheckpointError,
    damaged_file,
    find_checkpoint,
    manifest_of,
    verify_checkpoint,
)
from vlbert_fast.model.safe_load import WeightsFileError, digest


def make_tag(ckpt_dir, step: int, complete: bool = True):
    tag = ckpt_dir / f"step{step}"
    tag.mkdir(parents=True)
    (tag / "mp_rank_00_model_states.pt").write_bytes(b"deepspeed files")
    if complete:
        (tag / MARKER).write_text(json.dumps({"step": step}))
    return tag


def test_latest_names_a_complete_checkpoint_and_a_torn_one_is_never_chosen(tmp_path):
    ckpt = tmp_path / "run" / "checkpoints"
    make_tag(ckpt, 2)
    make_tag(ckpt, 4)
    torn = make_tag(ckpt, 6, complete=False)
    (ckpt / LATEST).write_text("step4")
    for path in (tmp_path / "run", ckpt):
        assert find_checkpoint(path) == ckpt / "step4"
    assert find_checkpoint(ckpt / "step2") == ckpt / "step2"  # a tag directory names itself
    (ckpt / LATEST).write_text("step6")  # damaged by hand: pointing at the torn save
    assert find_checkpoint(ckpt) == ckpt / "step4"  # the newest complete one instead
    (ckpt / LATEST).unlink()
    assert find_checkpoint(ckpt) == ckpt / "step4"
    assert torn.exists()
    assert find_checkpoint(tmp_path / "nothing_here") is None


def test_resolve_resume(tmp_path):
    run_dir = tmp_path / "run"
    cfg = load_config(RunConfig, overrides=[f"run_dir={run_dir}"])
    assert resolve_resume(cfg) is None  # auto, nothing saved yet: a fresh start
    make_tag(run_dir / "checkpoints", 3)
    assert resolve_resume(cfg) == run_dir / "checkpoints" / "step3"
    assert resolve_resume(load_config(RunConfig, overrides=[f"run_dir={run_dir}", "engine.resume=never"])) is None
    explicit = load_config(RunConfig, overrides=[f"engine.resume={run_dir / 'checkpoints' / 'step3'}"])
    assert resolve_resume(explicit) == run_dir / "checkpoints" / "step3"
    with pytest.raises(CheckpointError, match="no such file or directory"):
        resolve_resume(load_config(RunConfig, overrides=[f"engine.resume={tmp_path / 'missing'}"]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="engine.resume=.*no complete checkpoint found"):
        resolve_resume(load_config(RunConfig, overrides=[f"engine.resume={tmp_path / 'empty'}"]))


def test_prune_keeps_the_last_k_complete_and_drops_torn_saves(tmp_path):
    ckpt = tmp_path / "checkpoints"
    for step in (2, 4, 6, 8):
        make_tag(ckpt, step)
    make_tag(ckpt, 5, complete=False)
    (ckpt / "step8_universal").mkdir()  # not ours to delete
    removed = prune(ckpt, keep_last_k=2, current=ckpt / "step8")
    assert sorted(p.name for p in removed) == ["step2", "step4", "step5"]
    assert sorted(p.name for p in ckpt.iterdir()) == ["step6", "step8", "step8_universal"]
    assert prune(ckpt, keep_last_k=0, current=ckpt / "step8") == []


def test_config_guard():
    base = load_config(RunConfig)
    free = load_config(
        RunConfig,
        overrides=[
            "run_dir=elsewhere",
            "train.max_steps=5000",
            "train.log_every=7",
            "data.num_workers=4",
            "model.kernels=reference",
            "engine.zero_stage=3",
            "engine.save_interval_steps=100",
        ],
    )
    assert config_hash(base) == config_hash(free) and config_diff(to_dict(base), to_dict(free)) == []
    changed = load_config(RunConfig, overrides=["train.lr=0.01", "model.hidden_dropout_prob=0.1", "seed=3"])
    assert config_hash(changed) != config_hash(base)
    assert config_diff(to_dict(base), to_dict(changed)) == [
        "model.hidden_dropout_prob: 0.0 -> 0.1",
        "seed: 0 -> 3",
        "train.lr: 0.001 -> 0.01",
    ]
    with pytest.raises(ConfigChangedError, match="train.lr: 0.001 -> 0.01") as err:
        check_config(changed, to_dict(base), tag_dir="ckpt/step4")
    assert "engine.allow_config_change=true" in str(err.value)
    allowed = load_config(RunConfig, overrides=["train.lr=0.01", "engine.allow_config_change=true"])
    assert check_config(allowed, to_dict(base), tag_dir="ckpt/step4") == ["train.lr: 0.001 -> 0.01"]
    assert all(key.split(".")[0] in to_dict(base) for key in RESUME_FREE_KEYS)


def test_metrics_rows_after_the_resume_step_are_dropped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 8)))
    truncate_jsonl(path, after_step=4)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4]
    truncate_jsonl(tmp_path / "absent.jsonl", after_step=4)  # nothing logged yet: nothing to do


def make_verified_tag(ckpt_dir, step: int):
    """A complete tag whose checkpoint.json carries the manifest of its files, as checkpoint.save writes it."""
    tag = make_tag(ckpt_dir, step, complete=False)
    files = {"mp_rank_00_model_states.pt": digest(tag / "mp_rank_00_model_states.pt").to_dict()}
    (tag / MARKER).write_text(json.dumps({"step": step, "files": files}))
    return tag


def test_a_truncated_latest_falls_back_to_the_previous_complete_checkpoint_with_a_warning(tmp_path):
    ckpt = tmp_path / "run" / "checkpoints"
    for step in (2, 4, 6):
        make_verified_tag(ckpt, step)
    (ckpt / LATEST).write_text("step6")
    notes = []
    assert find_checkpoint(ckpt, notes) == ckpt / "step6" and notes == []
    model_file = ckpt / "step6" / "mp_rank_00_model_states.pt"
    model_file.write_bytes(model_file.read_bytes()[:5])  # cut short after the save
    assert find_checkpoint(tmp_path / "run", notes) == ckpt / "step4"
    (note,) = notes
    assert f"checkpoint {ckpt / 'step6'} is damaged ({model_file}: truncated: 5 bytes, the manifest says 15)" in note
    assert f"using the previous complete checkpoint {ckpt / 'step4'} instead" in note
    cfg = load_config(RunConfig, overrides=[f"run_dir={tmp_path / 'run'}"])
    assert resolve_resume(cfg) == ckpt / "step4"  # resume: auto takes the previous one too
    (ckpt / "step4" / "mp_rank_00_model_states.pt").unlink()
    notes = []
    assert find_checkpoint(ckpt, notes) == ckpt / "step2"
    assert "(1 more damaged in between)" in notes[0]
    (ckpt / "step2" / MARKER).write_text("{torn")
    with pytest.raises(CheckpointError, match=rf"every complete checkpoint is damaged; the newest, {ckpt / 'step6'}"):
        find_checkpoint(ckpt)


def test_checkpoint_verification_before_reading(tmp_path):
    tag = make_verified_tag(tmp_path / "checkpoints", 3)
    manifest = manifest_of(json.loads((tag / MARKER).read_text()), tag / MARKER)
    verify_checkpoint(tag, manifest)
    (tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"slipped in")
    with pytest.raises(WeightsFileError, match="zero_pp_rank_0_mp_rank_00_optim_states.pt: not in the manifest"):
        verify_checkpoint(tag, manifest)
    (tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt").unlink()
    (tag / "mp_rank_00_model_states.pt").write_bytes(b"deepspeed filez")  # same size, other bytes
    with pytest.raises(WeightsFileError, match="mp_rank_00_model_states.pt: changed since it was saved"):
        verify_checkpoint(tag, manifest)
    assert damaged_file(tag, manifest) is None  # sizes alone cannot see it: the load's check does
