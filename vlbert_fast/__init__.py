"""vlbert_fast: fast VL-BERT pretraining and fine-tuning."""

from .version import __version__

__all__ = ["__version__"]
