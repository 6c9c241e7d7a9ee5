"""Build the pretraining data of a run: resolve the data root (the synthetic world by default), check it against the
model config, and make the datasets, the mixed batch sampler and the DataLoader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import ConcatDataset, DataLoader

from ..config import RunConfig
from ..tokenization import Tokenizer
from .formats import SkipCounter, read_cc_jsonl, read_text_corpus
from .pretrain import CaptionDataset, RegionSource, TextOnlyDataset, collate_pretrain
from .sampler import MixedBatchSampler
from .synth import cached_world


class DataConfigError(ValueError):
    """The data does not fit the model config (vocabulary, feature width, classes) or is missing."""


@dataclass
class PretrainData:
    root: Path
    tokenizer: Tokenizer
    captions: CaptionDataset
    texts: TextOnlyDataset | None
    sampler: MixedBatchSampler
    loader: DataLoader
    val: CaptionDataset | None
    """Held-out captions without masking (the evaluation masks them itself)."""
    probe_words: list[str]
    counter: SkipCounter
    """Skipped records while loading the record lists (the training loop counts the per-sample skips)."""

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.sampler.set_epoch(epoch, start_batch)
        self.captions.set_epoch(epoch)
        if self.texts is not None:
            self.texts.set_epoch(epoch)


def resolve_root(cfg: RunConfig) -> Path:
    if cfg.data.root:
        root = Path(cfg.data.root)
        if not root.is_dir():
            raise DataConfigError(f"data.root {root} is not a directory")
        return root
    return cached_world(cfg.data.synth)


def _under(root: Path, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else root / path


def build_pretrain_data(cfg: RunConfig, rank: int = 0, world_size: int = 1) -> PretrainData:
    data, model = cfg.data, cfg.model
    root = resolve_root(cfg)
    tokenizer = Tokenizer(_under(root, data.tokenizer))
    if tokenizer.vocab_size != model.vocab_size:
        raise DataConfigError(
            f"the tokenizer at {_under(root, data.tokenizer)} has {tokenizer.vocab_size} tokens but model.vocab_size "
            f"is {model.vocab_size}; set model.vocab_size={tokenizer.vocab_size}"
        )
    counter = SkipCounter(on_error=data.on_bad_record)
    regions = RegionSource(root, data.features)

    def captions(name: str, masking: bool) -> CaptionDataset:
        path = _under(root, name)
        return CaptionDataset(
            read_cc_jsonl(path, counter=counter),
            regions,
            tokenizer,
            data,
            source=str(path),
            seed=cfg.seed,
            masking=masking,
            feature_dim=model.visual_feature_dim,
            num_classes=model.num_roi_classes,
            visual=model.visual,
            relationship=model.relationship_head and masking,  # held-out captions keep their own images
        )

    train = captions(data.captions, masking=True)
    texts = None
    if data.text_corpus and data.text_only_fraction > 0:
        texts = TextOnlyDataset(read_text_corpus(_under(root, data.text_corpus)), tokenizer, data, seed=cfg.seed)
    micro = cfg.train.micro_batch_size
    text_rows = round(micro * data.text_only_fraction) if texts is not None else 0
    sampler = MixedBatchSampler(
        train.lengths(),
        len(texts) if texts is not None else 0,
        caption_rows=micro - text_rows,
        text_rows=text_rows,
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
        group_by_length=data.group_by_length,
    )
    dataset = ConcatDataset([train, texts] if texts is not None else [train])
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_pretrain,
        num_workers=data.num_workers,
        pin_memory=False,
    )
    val = captions(data.val_captions, masking=False) if data.val_captions else None
    probe_path = _under(root, data.probe_words) if data.probe_words else None
    probe = []
    if probe_path is not None and probe_path.is_file():
        probe = [w.strip() for w in probe_path.read_text(encoding="utf-8").splitlines() if w.strip()]
    return PretrainData(root, tokenizer, train, texts, sampler, loader, val, probe, counter)
