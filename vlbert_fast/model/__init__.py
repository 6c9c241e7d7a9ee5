"""VL-BERT in plain PyTorch: embeddings, the precomputed visual path, the post-LN encoder, pretraining heads."""

from .hf_bert import BertLoadError, LoadReport, load_hf_bert
from .pretrained import PretrainedError, from_pretrained, save_pretrained
from .vlbert import ZERO3_LEAF_MODULES, PretrainOutput, VLBertForPretraining, VLBertModel

__all__ = [
    "ZERO3_LEAF_MODULES",
    "BertLoadError",
    "LoadReport",
    "PretrainOutput",
    "PretrainedError",
    "VLBertForPretraining",
    "VLBertModel",
    "from_pretrained",
    "load_hf_bert",
    "save_pretrained",
]
