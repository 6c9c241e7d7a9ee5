"""Typed configs: YAML + overrides round trip, unknown keys, wrong types, `_base_` chains, documentation."""

from pathlib import Path

import pytest

from vlbert_fast.config import ConfigError, ModelConfig, RunConfig, describe, load_config, save_config, to_dict


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_are_the_tiny_model():
    cfg = load_config(RunConfig)
    assert cfg.model == ModelConfig()
    tiny = load_config(RunConfig, ["configs/model/tiny.yaml"])
    assert tiny == cfg


def test_presets_have_the_papers_sizes():
    base = load_config(RunConfig, ["configs/model/base.yaml"]).model
    large = load_config(RunConfig, ["configs/model/large.yaml"]).model
    assert (base.hidden_size, base.num_hidden_layers, base.num_attention_heads, base.intermediate_size) == (
        768,
        12,
        12,
        3072,
    )
    assert (large.hidden_size, large.num_hidden_layers, large.num_attention_heads, large.intermediate_size) == (
        1024,
        24,
        16,
        4096,
    )
    for m in (base, large):
        assert (m.vocab_size, m.max_position_embeddings, m.type_vocab_size, m.layer_norm_eps) == (30522, 512, 3, 1e-12)
        assert (m.hidden_dropout_prob, m.attention_probs_dropout_prob, m.visual_dropout) == (0.1, 0.1, 0.1)
        assert (m.visual_scale_text_init, m.visual_scale_object_init, m.num_roi_classes) == (0.0, 0.0, 1601)


def test_yaml_and_overrides_round_trip(tmp_path):
    f = write(tmp_path / "a.yaml", "model:\n  hidden_size: 256\n  num_attention_heads: 8\nseed: 3\n")
    cfg = load_config(RunConfig, [f], ["model.num_hidden_layers=5", "model.hidden_dropout_prob=0", "seed=7"])
    assert (cfg.model.hidden_size, cfg.model.num_attention_heads, cfg.model.num_hidden_layers, cfg.seed) == (
        256,
        8,
        5,
        7,
    )
    assert cfg.model.hidden_dropout_prob == 0.0 and isinstance(cfg.model.hidden_dropout_prob, float)
    saved = tmp_path / "resolved.yaml"
    save_config(cfg, saved)
    assert load_config(RunConfig, [saved]) == cfg
    assert to_dict(load_config(RunConfig, [saved])) == to_dict(cfg)


def test_exponent_floats_without_a_dot(tmp_path):
    """YAML 1.1 reads `1e-4` as a string; a float field takes it (and still rejects words)."""
    f = write(tmp_path / "lr.yaml", "model:\n  layer_norm_eps: 1e-6\n")
    cfg = load_config(RunConfig, [f], ["train.lr=3e-3"])
    assert cfg.model.layer_norm_eps == 1e-6 and cfg.train.lr == 3e-3
    with pytest.raises(ConfigError, match="train.lr: expected float, found str 'fast'"):
        load_config(RunConfig, overrides=["train.lr=fast"])


def test_base_chain_and_interpolation(tmp_path):
    write(tmp_path / "parent.yaml", "model:\n  hidden_size: 96\n  num_attention_heads: 3\n")
    child = write(tmp_path / "child.yaml", "_base_: parent.yaml\nmodel:\n  intermediate_size: ${model.hidden_size}\n")
    cfg = load_config(RunConfig, [child])
    assert (cfg.model.hidden_size, cfg.model.num_attention_heads, cfg.model.intermediate_size) == (96, 3, 96)


def test_base_cycle_is_reported(tmp_path):
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(RunConfig, [tmp_path / "a.yaml"])


def test_unknown_key_suggests_the_closest_name(tmp_path):
    f = write(tmp_path / "typo.yaml", "model:\n  hiden_size: 256\n")
    with pytest.raises(
        ConfigError, match=r"typo.yaml: unknown key 'model.hiden_size'; did you mean 'model.hidden_size'"
    ):
        load_config(RunConfig, [f])
    with pytest.raises(ConfigError, match=r"command line: unknown key 'modl'; did you mean 'model'"):
        load_config(RunConfig, overrides=["modl.hidden_size=3"])


def test_wrong_type_names_expected_and_found(tmp_path):
    with pytest.raises(ConfigError, match=r"model.hidden_size: expected int, found str 'big'"):
        load_config(RunConfig, overrides=["model.hidden_size=big"])
    with pytest.raises(ConfigError, match=r"model.check_inputs: expected bool .* found int 1"):
        load_config(RunConfig, overrides=["model.check_inputs=1"])
    with pytest.raises(ConfigError, match=r"model.hidden_size: expected int, found float 1.5"):
        load_config(RunConfig, [write(tmp_path / "f.yaml", "model:\n  hidden_size: 1.5\n")])


def test_validation_errors_name_the_section():
    with pytest.raises(ConfigError, match="model: hidden_size 100 is not divisible by num_attention_heads 3"):
        load_config(RunConfig, overrides=["model.hidden_size=100", "model.num_attention_heads=3"])
    with pytest.raises(ConfigError, match="model: hidden_dropout_prob must be in"):
        load_config(RunConfig, overrides=["model.hidden_dropout_prob=1.5"])


def test_bad_files_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(RunConfig, [tmp_path / "nope.yaml"])
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_config(RunConfig, [write(tmp_path / "list.yaml", "- 1\n- 2\n")])
    with pytest.raises(ConfigError, match="not of the form key.path=value"):
        load_config(RunConfig, overrides=["model.hidden_size"])


def test_every_field_is_documented():
    rows = describe(RunConfig)
    assert len(rows) > 20
    undocumented = [key for key, _, _, doc in rows if not doc]
    assert undocumented == []


@pytest.mark.parametrize("path", sorted(Path("configs/pretrain").glob("*.yaml")), ids=lambda p: p.stem)
def test_pretrain_configs_load_and_their_batches_divide(path):
    cfg = load_config(RunConfig, [path])
    gpus = 8 if "8xH100" in path.stem else 1
    assert cfg.train.global_batch_size % (cfg.train.micro_batch_size * gpus) == 0


def test_base_e2e_is_the_originals_e2e_setting():
    """cfgs/pretrain/base_e2e_16x16G_fp16.yaml of the original: ResNet-101 C4, stages 1-2 and BatchNorm frozen, Caffe
    means, dilated res5 on 14 x 14 RoIs, scales 600 / 1000, flip 0.5, 1e-7 per sample, 16 x 16 rows per step."""
    cfg = load_config(RunConfig, ["configs/pretrain/base_e2e_8xH100_bf16.yaml"])
    v = cfg.model.visual
    assert (v.mode, v.depth, v.frozen_stages, v.frozen_bn, v.stride_in_1x1) == ("e2e", 101, 2, True, True)
    assert (v.res5_dilated, v.pooled_size, v.sampling_ratio, v.normalization) == (True, 14, 1, "caffe")
    assert (v.short_side, v.long_side, v.flip_prob, v.out_channels) == (600, 1000, 0.5, 2048)
    assert cfg.model.visual_feature_dim == v.out_channels
    assert cfg.train.global_batch_size == 256 and cfg.train.lr == pytest.approx(1e-7 * 256)
    assert cfg.model.visual_scale_text_init == 0.0 and cfg.model.visual_scale_object_init == 0.0
