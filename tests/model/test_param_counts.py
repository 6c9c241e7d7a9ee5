"""Parameter counts of Base and Large: BERT's (without NSP head and pooler) plus the VL parts, stated in numbers."""

import pytest
import torch
from transformers import BertConfig, BertForPreTraining

from vlbert_fast.config import RunConfig, load_config
from vlbert_fast.model import VLBertForPretraining, VLBertModel

# BERT-Base BertModel with pooler: 109,482,240 (bert-base-uncased); without its pooler (768*768 + 768): 108,891,648.
# VL parts, Base: 3rd token-type row 768; two visual LayerNorms 2*1536; [IMG], masked [IMG], [END] and text-visual
# vectors 4*768; masked appearance 2048; projection Linear(4096 -> 768) 4096*768 + 768 = 3,146,496.
# Heads, Base: MLM dense 590,592 + LN 1,536 + bias 30,522; masked-RoI dense 590,592 + Linear(768 -> 1601) 1,231,169.
EXPECTED = {
    "base": dict(bert_no_pooler=108_891_648, vl_parts=3_155_456, model=112_047_104, pretraining=114_491_515),
    # BERT-Large with pooler: 335,141,888; pooler 1,049,600. VL parts: 1024 + 4096 + 4096 + 2048 + 4,195,328.
    # Heads: MLM 1,049,600 + 2,048 + 30,522 = 1,082,170; masked-RoI 1,049,600 + 1,641,025 = 2,690,625.
    "large": dict(bert_no_pooler=334_092_288, vl_parts=4_206_592, model=338_298_880, pretraining=342_071_675),
}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("size", ["base", "large"])
def test_parameter_counts(size):
    cfg = load_config(RunConfig, [f"configs/model/{size}.yaml"]).model
    want = EXPECTED[size]
    with torch.device("meta"):
        hf = BertForPreTraining(
            BertConfig(
                vocab_size=cfg.vocab_size,
                hidden_size=cfg.hidden_size,
                num_hidden_layers=cfg.num_hidden_layers,
                num_attention_heads=cfg.num_attention_heads,
                intermediate_size=cfg.intermediate_size,
            )
        )
        model = VLBertModel(cfg)
        pretraining = VLBertForPretraining(cfg)
    bert_no_pooler = count(hf.bert) - count(hf.bert.pooler)
    assert bert_no_pooler == want["bert_no_pooler"]
    assert count(model) == want["model"] == want["bert_no_pooler"] + want["vl_parts"]
    assert count(pretraining) == want["pretraining"]
    # the heads: BERT's MLM head (its decoder tied) plus the masked-RoI head
    mlm = count(hf.cls.predictions.transform) + hf.cls.predictions.bias.numel()  # its decoder is the tied table
    h, c = cfg.hidden_size, cfg.num_roi_classes
    assert count(pretraining) - count(model) == mlm + (h * h + h) + (h * c + c)
