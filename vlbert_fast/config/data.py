"""Pretraining data: where it lives, how it is masked, truncated and batched. An empty `root` means the embedded
default: the synthetic world (config/synth_world.py), generated once into a cache directory."""

from __future__ import annotations

from dataclasses import dataclass, field

from .synth_world import SynthConfig


@dataclass
class DataConfig:
    root: str = ""
    """Directory of the pretraining data. Empty: the synthetic world of `synth`, generated into the cache if missing."""

    captions: str = "cc_train.jsonl"
    """Conceptual Captions JSON Lines of the training image-text pairs, relative to root."""

    val_captions: str = "cc_val.jsonl"
    """JSON Lines of the held-out pairs used by the end-of-run evaluation, relative to root ('' for none)."""

    features: str = "features"
    """Region features: a shard directory (with index.json) made by `vlbert-fast convert-features`, relative to
    root; empty to read each caption record's `frcnn` region JSON instead (slower)."""

    text_corpus: str = "corpus.txt"
    """Text-only corpus (one unit per line), relative to root; empty to train on image-text rows only."""

    tokenizer: str = "tokenizer"
    """Directory holding the WordPiece vocab.txt, relative to root (or absolute)."""

    probe_words: str = "probe_words.txt"
    """Words the end-of-run evaluation masks (one per line, relative to root); empty or missing: masked words are
    chosen as in training."""

    max_seq_len: int = 64
    """Longest image-text sample in tokens, text + regions (the original's SEQ_LEN). Longer samples drop their
    lowest-confidence regions or last words, whichever part is longer, keeping [SEP] and the whole-image region."""

    text_only_seq_len: int = 24
    """Word pieces of a text-only row (no [CLS]/[SEP], as the original; [END] follows): following corpus lines are
    joined until it is filled, as the original does (the original: 64; the synthetic corpus' sentences are short,
    and longer rows would only cost time)."""

    max_regions: int = 100
    """Detections kept per image, highest confidence first, cut with the truncation to max_seq_len. Masking and the
    whole-image mean see every detection of the record, as in the original (which has no such cap)."""

    mlm_probability: float = 0.15
    """Chance that a whole word is chosen for masked language modelling."""

    mlm_mask_fraction: float = 0.8
    """Of the chosen words: fraction replaced by [MASK] (then `mlm_random_fraction` random, the rest kept)."""

    mlm_random_fraction: float = 0.1
    """Of the chosen words: fraction replaced by random tokens."""

    roi_probability: float = 0.15
    """Chance that a detection is chosen for masked-RoI classification (the whole-image region never is)."""

    roi_mask_fraction: float = 0.9
    """Of the chosen regions: fraction whose appearance is hidden (the rest are kept and still predicted)."""

    text_only_fraction: float = 0.5
    """Share of each micro batch that is text-only rows (0.5: the original's 1:1 mix); 0 to disable."""

    group_by_length: bool = False
    """Batch image-text samples of similar length together (less padding on the padded path). Off by default:
    packed attention does not pay for padding, and where length follows the caption's wording (the synthetic world)
    grouped batches are less varied and learn more slowly."""

    num_workers: int = 1
    """DataLoader worker processes per rank (0: load in the training process)."""

    on_bad_record: str = "raise"
    """What a malformed record does: "raise" (stop with an error naming file and record) or "skip" (count it and
    report the counts at the end of each epoch)."""

    synth: SynthConfig = field(default_factory=SynthConfig)
    """The synthetic world used when root is empty."""

    def __post_init__(self) -> None:
        for name in (
            "mlm_probability",
            "mlm_mask_fraction",
            "mlm_random_fraction",
            "roi_probability",
            "roi_mask_fraction",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], found {getattr(self, name)}")
        if self.mlm_mask_fraction + self.mlm_random_fraction > 1.0:
            raise ValueError("mlm_mask_fraction + mlm_random_fraction must be at most 1")
        if not 0.0 <= self.text_only_fraction < 1.0:
            raise ValueError(f"text_only_fraction must be in [0, 1), found {self.text_only_fraction}")
        if self.max_seq_len < 4:
            raise ValueError(
                f"max_seq_len must be at least 4 ([CLS] word [SEP] + the whole image), found {self.max_seq_len}"
            )
        if self.text_only_seq_len < 1:
            raise ValueError(f"text_only_seq_len must be at least 1, found {self.text_only_seq_len}")
        if self.max_regions < 1:
            raise ValueError(f"max_regions must be at least 1, found {self.max_regions}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, found {self.num_workers}")
        if self.on_bad_record not in ("raise", "skip"):
            raise ValueError(f"on_bad_record must be 'raise' or 'skip', found {self.on_bad_record!r}")
