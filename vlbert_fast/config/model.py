"""The model's configuration. Defaults are the embedded tiny model; configs/model/{base,large}.yaml set the paper's
sizes (BERT-Base 768/12/12/3072 and BERT-Large 1024/24/16/4096)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .visual import VisualConfig

KERNEL_CHOICES = ("auto", "reference", "triton")
ATTENTION_CHOICES = ("auto", "flash_attn", "triton", "sdpa", "reference")
ATTENTION_PRECISIONS = ("tf32", "ieee")


def checkpointed_layers(spec: str, num_layers: int) -> frozenset[int]:
    """The layers whose activations are recomputed in the backward, from `activation_checkpointing`: "none", "all",
    "every:K" (layers 0, K, 2K, ...) or comma-separated layer indices ("0,1,5"). Raises ValueError naming the field."""
    spec = spec.strip()
    if spec == "none":
        return frozenset()
    if spec == "all":
        return frozenset(range(num_layers))
    try:
        if spec.startswith("every:"):
            step = int(spec.removeprefix("every:"))
            if step <= 0:
                raise ValueError
            return frozenset(range(0, num_layers, step))
        layers = frozenset(int(part) for part in spec.split(","))
    except ValueError:
        raise ValueError(
            f"activation_checkpointing must be 'none', 'all', 'every:K' (K > 0) or comma-separated layer indices, "
            f"found {spec!r}"
        ) from None
    outside = sorted(i for i in layers if not 0 <= i < num_layers)
    if outside:
        raise ValueError(
            f"activation_checkpointing: layers {outside} are outside [0, {num_layers}) (num_hidden_layers)"
        )
    return layers


@dataclass
class ModelConfig:
    vocab_size: int = 1024
    """Word-piece vocabulary size; must equal the tokenizer's (the synthetic world: 1024; BERT uncased: 30522)."""

    hidden_size: int = 128
    """Width H of the transformer (Base 768, Large 1024)."""

    num_hidden_layers: int = 2
    """Number of post-LN transformer layers (Base 12, Large 24)."""

    num_attention_heads: int = 4
    """Attention heads per layer; must divide hidden_size (Base 12, Large 16)."""

    intermediate_size: int = 512
    """Width of the feed-forward block (Base 3072, Large 4096)."""

    hidden_act: str = "gelu"
    """Feed-forward activation. Only BERT's exact erf GELU, "gelu", is supported."""

    hidden_dropout_prob: float = 0.0
    """Dropout after the embedding, attention output and feed-forward output (BERT and the original: 0.1; the tiny
    model on the synthetic world learns to read the image several times faster without it)."""

    attention_probs_dropout_prob: float = 0.0
    """Dropout on the attention probabilities (BERT and the original: 0.1)."""

    max_position_embeddings: int = 512
    """Rows of the position table; a sample may hold at most this many text tokens + 2."""

    type_vocab_size: int = 3
    """Token types: 0 sentence A, 1 sentence B, 2 every RoI and [END]."""

    layer_norm_eps: float = 1e-12
    """Epsilon of every LayerNorm (BERT's 1e-12)."""

    initializer_range: float = 0.02
    """Standard deviation of the normal initialisation of weights and embeddings."""

    visual_feature_dim: int = 128
    """Width of a region's appearance feature (ResNet res5 output: 2048; the synthetic world's extractor: 128)."""

    geometry_dim: int = 2048
    """Width of the sinusoidal box-geometry encoding: 4 coordinates x (sin, cos) x geometry_dim/8 frequencies."""

    geometry_wave_length: float = 1000.0
    """Base of the geometry frequencies: value / wave_length**(k / (geometry_dim/8))."""

    geometry_scale: float = 100.0
    """Box coordinates are divided by the image width or height and multiplied by this before the encoding."""

    visual_dropout: float = 0.1
    """Dropout on concat(appearance, geometry) before the 4096 -> H projection."""

    visual_scale_text_init: float = 0.1
    """Initial gain of the LayerNorm on text tokens' visual features. The original (and configs/model/base.yaml,
    large.yaml): 0, so that a model initialised from BERT starts with exactly BERT's text embeddings. The tiny
    default trains from scratch: from 0 the visual projection gets no gradient until the gains move, which costs
    the short default run most of its steps. At 0.1 the default's 1000 steps read the image (59.7% of the held-out
    colour/shape words against 20.7% with shuffled images); at 0.02, the scale of the other embeddings at
    initialisation, 1200 steps reach 61.2% against 22.0% (both with the original's text-only rows; before them,
    800 steps at 0.1 gave 55.2% against 20.6% and at 0.02 44.2% against 20.9%)."""

    visual_scale_object_init: float = 0.1
    """Initial gain of the LayerNorm on RoI tokens' visual features (the original: 0; see visual_scale_text_init)."""

    num_roi_classes: int = 25
    """Classes of the detector's soft labels for masked-RoI classification (Visual Genome: 1600 + background =
    1601; the synthetic world: 6 colours x 4 shapes + background = 25)."""

    with_pooler: bool = False
    """Give the pretraining model BERT's pooler (Dense(H -> H) + tanh on the first token): loaded from a BERT
    directory with the rest (`engine.init_from`) and carried in checkpoints and exports, so a VCR fine-tuning starts
    from BERT's pooler as the original's does. It trains only with `relationship_head`; otherwise it is frozen."""

    relationship_head: bool = False
    """The original's sentence-image relationship prediction (its optional WITH_REL_LOSS; the paper's Table 4
    ablation, off in the paper's final models): Linear(H -> 2) on the pooled first token of every image-text row,
    cross-entropy against 1 (the record's own caption) or 0 (a caption drawn from another record, for half of the
    rows, as the original's data does). Adds the pooler (it trains)."""

    check_inputs: bool = True
    """Validate every batch (id ranges, box order, finite features, matching shapes) with a clear error. The
    checks that read values synchronise a GPU once per step; turn off for the last percent of speed."""

    kernels: str = "auto"
    """Implementation of the fused ops (embedding, box geometry): "auto" (Triton kernels on a GPU, the plain-PyTorch
    reference elsewhere), "reference", or "triton" (an error listing why where Triton cannot run the inputs).
    `vlbert-fast env` shows what "auto" picks on this machine."""

    visual: VisualConfig = field(default_factory=VisualConfig)
    """Where region appearance comes from: precomputed features (the default) or the ResNet end to end."""
    attention: str = "auto"
    """Backend of the packed encoder's attention (`ops.varlen_attention`): "auto" (flash-attn when installed, our
    Triton kernel on a GPU, else PyTorch's SDPA), "flash_attn", "triton", "sdpa" or "reference" (an explicit one
    that cannot run the inputs is an error listing why). Only the packed path uses it."""

    attention_precision: str = "tf32"
    """How the Triton attention kernels multiply fp32 inputs (fine-tuning runs in fp32): "tf32" (tensor cores; the
    products carry 10-bit mantissas, ~1e-3 relative, the sums stay fp32) or "ieee" (exact fp32 products on the CUDA
    cores, several times slower). bf16/fp16 runs and the other backends ignore it (ops/attention.py)."""

    packed: bool = True
    """Run the encoder on the packed [tokens, H] stream (`x[attention_mask]` with cu_seqlens: no padding is ever
    computed) with varlen attention, the fused bias/dropout/residual/LayerNorm and bias/GELU ops, and the chunked
    fused MLM loss; False runs the plain padded reference (the specification, same parameters, same results with
    dropout off). On the embedded default's CPU run packed steps are as fast or slightly faster (no padded rows)."""

    activation_checkpointing: str = "none"
    """Encoder layers whose activations are recomputed in the backward instead of kept: "none", "all", "every:K"
    (layers 0, K, 2K, ...) or comma-separated layer indices ("0,1,5"). Trades about one extra forward of those layers
    for their activation memory; dropout masks are reproduced exactly."""

    def __post_init__(self) -> None:
        positive = (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "visual_feature_dim",
            "geometry_dim",
            "num_roi_classes",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, found {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act != "gelu":
            raise ValueError(f"hidden_act must be 'gelu' (BERT's erf GELU), found {self.hidden_act!r}")
        if self.type_vocab_size != 3:
            raise ValueError(
                f"type_vocab_size must be 3 (sentence A, sentence B, visual), found {self.type_vocab_size}"
            )
        if self.geometry_dim % 8:
            raise ValueError(
                f"geometry_dim must be a multiple of 8 (4 coordinates x sin/cos), found {self.geometry_dim}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "visual_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), found {getattr(self, name)}")
        for name in ("layer_norm_eps", "initializer_range", "geometry_wave_length", "geometry_scale"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, found {getattr(self, name)}")
        if self.kernels not in KERNEL_CHOICES:
            raise ValueError(f"kernels must be one of {', '.join(KERNEL_CHOICES)}, found {self.kernels!r}")
        if self.visual.end_to_end and self.visual_feature_dim != self.visual.out_channels:
            raise ValueError(
                f"visual_feature_dim is {self.visual_feature_dim} but the e2e ResNet (depth {self.visual.depth}, "
                f"width {self.visual.width}) gives {self.visual.out_channels}-d features; set "
                f"model.visual_feature_dim={self.visual.out_channels}"
            )
        if self.attention not in ATTENTION_CHOICES:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_CHOICES)}, found {self.attention!r}")
        if self.attention_precision not in ATTENTION_PRECISIONS:
            choices = ", ".join(ATTENTION_PRECISIONS)
            raise ValueError(f"attention_precision must be one of {choices}, found {self.attention_precision!r}")
        checkpointed_layers(self.activation_checkpointing, self.num_hidden_layers)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads
