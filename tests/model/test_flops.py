"""The analytic FLOP counter: against a count derived by hand, and against PyTorch's FlopCounterMode on the
reference model (equal lengths, so the padded reference runs exactly the counted work)."""

import dataclasses

import torch
from torch.utils.flop_counter import FlopCounterMode

from vlbert_fast.config import ModelConfig
from vlbert_fast.data import collate
from vlbert_fast.data.random import random_examples
from vlbert_fast.model import VLBertForPretraining
from vlbert_fast.model.flops import batch_training_flops, forward_flops


def test_hand_count():
    cfg = ModelConfig(
        vocab_size=10,
        hidden_size=4,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=8,
        visual_feature_dim=2,
        geometry_dim=8,
        num_roi_classes=3,
    )
    parts = forward_flops(cfg, seq_lens=[3, 2], num_regions=1, num_masked_words=1, num_predicted_regions=1)
    # projection 2*1*(2+8)*4 = 80
    # per token: QKV 2*4*12 = 96, output 2*4*4 = 32, FFN 2*4*8*2 = 128 -> 256
    # sample of 3: 3*256 + attention 2*2*3*3*4 = 144 -> 912; sample of 2: 512 + 64 -> 576
    # MLM: 2*(4*4 + 4*10) = 112; RoI: 2*(4*4 + 4*3) = 56
    assert parts == {"visual_projection": 80.0, "encoder": 1488.0, "mlm_head": 112.0, "roi_head": 56.0}


def test_matches_flop_counter_on_the_reference_model(tiny_cfg):
    tiny_cfg = dataclasses.replace(tiny_cfg, packed=False)  # the padded reference (FlopCounterMode skips CPU SDPA)
    model = VLBertForPretraining(tiny_cfg).eval()
    examples = random_examples(tiny_cfg, 4, seed=2, text_len=(9, 9), num_regions=(3, 3), text_only=0.0)
    for ex in examples:
        ex.region_predict[1] = True
    batch = collate(examples)
    assert len(set(batch.seq_lens.tolist())) == 1  # no padding: the padded model does exactly the packed work
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(batch)
    masked = int((batch.mlm_labels != -100).sum())
    parts = forward_flops(tiny_cfg, batch.seq_lens.tolist(), batch.num_regions, masked, int(batch.region_predict.sum()))
    assert counter.get_total_flops() == sum(parts.values())
    assert batch_training_flops(tiny_cfg, batch) == 3 * sum(parts.values())
