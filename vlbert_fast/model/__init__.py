"""VL-BERT in plain PyTorch: embeddings, the precomputed visual path, the post-LN encoder, pretraining heads."""

from .hf_bert import BertLoadError, LoadReport, load_hf_bert
from .vlbert import PretrainOutput, VLBertForPretraining, VLBertModel

__all__ = ["BertLoadError", "LoadReport", "PretrainOutput", "VLBertForPretraining", "VLBertModel", "load_hf_bert"]
