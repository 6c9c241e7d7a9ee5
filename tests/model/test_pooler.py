"""BERT's pooler reaches the VCR head as the original's does: from a saved Hugging Face BERT directory given as
init_from, and from a pretraining model with `model.with_pooler` (loaded from BERT, carried unchanged, exported);
a BERT without a pooler leaves the head's fresh. The relationship head takes BERT's next-sentence head."""

import dataclasses

import torch
from transformers import BertForMaskedLM

from vlbert_fast.model import VLBertForPretraining, from_pretrained, load_hf_bert, save_pretrained
from vlbert_fast.model.vlbert_finetuning import pretraining_state
from vlbert_fast.tasks.vcr.head import VCRHead, init_pooler

from .helpers import hf_config, random_hf_bert


def test_vcr_head_takes_the_pooler_of_a_saved_bert_directory(tiny_cfg, tmp_path):
    hf = random_hf_bert(tiny_cfg)
    hf.save_pretrained(tmp_path / "bert")
    state = pretraining_state(tmp_path / "bert", tiny_cfg)  # init_from=<BERT directory>, tiny_cfg has no pooler
    head = VCRHead(tiny_cfg.hidden_size)
    lines = init_pooler(head, state)
    assert torch.equal(head.pooler.weight, hf.bert.pooler.dense.weight)
    assert torch.equal(head.pooler.bias, hf.bert.pooler.dense.bias)
    assert lines[0] == "vcr head: pooler.dense.weight <- pooler.dense.weight"


def test_a_bert_without_pooler_leaves_the_head_fresh(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    BertForMaskedLM(hf_config(tiny_cfg)).save_pretrained(tmp_path / "mlm")  # no pooler in a masked-LM checkpoint
    state = pretraining_state(tmp_path / "mlm", tiny_cfg)
    assert not any(k.startswith("pooler.") for k in state)
    assert "fresh" in init_pooler(VCRHead(tiny_cfg.hidden_size), state)[0]


def test_pretraining_carries_the_pooler_into_exports(tiny_cfg, tmp_path):
    cfg = dataclasses.replace(tiny_cfg, with_pooler=True)
    hf = random_hf_bert(cfg)
    hf.save_pretrained(tmp_path / "bert")
    model = VLBertForPretraining(cfg)
    report = load_hf_bert(model, tmp_path / "bert")
    assert "pooler.dense.weight" in report.loaded and not any(n.startswith("pooler.") for n in report.unused_known)
    assert torch.equal(model.pooler.dense.weight, hf.bert.pooler.dense.weight)
    assert not any(p.requires_grad for p in model.pooler.parameters())  # nothing in pretraining trains it
    save_pretrained(model.state_dict(), cfg, tmp_path / "export")
    assert torch.equal(from_pretrained(tmp_path / "export").pooler.dense.bias, hf.bert.pooler.dense.bias)
    head = VCRHead(cfg.hidden_size)
    init_pooler(head, pretraining_state(tmp_path / "export", cfg))
    assert torch.equal(head.pooler.weight, hf.bert.pooler.dense.weight)


def test_relationship_head_from_bert_next_sentence_head(tiny_cfg, tmp_path):
    cfg = dataclasses.replace(tiny_cfg, relationship_head=True)
    hf = random_hf_bert(cfg)
    hf.save_pretrained(tmp_path / "bert")
    model = VLBertForPretraining(cfg)
    report = load_hf_bert(model, tmp_path / "bert")
    assert torch.equal(model.relationship_head.weight, hf.cls.seq_relationship.weight)
    assert "relationship_head.bias" in report.loaded and all(p.requires_grad for p in model.pooler.parameters())
