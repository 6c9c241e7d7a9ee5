"""Build the pretraining data of a run: resolve the data root (the synthetic world by default), check it against the
model config, and make the datasets, the mixed batch sampler and the DataLoader."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch.utils.data import ConcatDataset, DataLoader

from ..config import RunConfig
from ..tokenization import Tokenizer
from .caption_dataset import CaptionDataset, RegionSource, TextOnlyDataset, collate_pretrain
from .formats import FeatureShards, SkipCounter, read_cc_jsonl, read_text_corpus
from .formats.paths import under
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
    """Skipped records while loading the record lists (the pretraining job counts the per-sample skips)."""
    notes: list[str] = field(default_factory=list)
    """What the log should say about the data before training (records skipped while reading the lists)."""

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


def check_shards_fit(shards: FeatureShards | None, cfg: RunConfig) -> None:
    """DataConfigError when the shards' widths cannot feed the model (every record would fail)."""
    if shards is None:
        return
    where = shards.directory / "index.json"
    if not cfg.model.visual.end_to_end and shards.feature_dim != cfg.model.visual_feature_dim:
        raise DataConfigError(
            f"{where}: region features are {shards.feature_dim}-d but model.visual_feature_dim is "
            f"{cfg.model.visual_feature_dim}; set model.visual_feature_dim={shards.feature_dim}"
        )
    if shards.num_classes is not None and shards.num_classes != cfg.model.num_roi_classes:
        raise DataConfigError(
            f"{where}: soft labels have {shards.num_classes} classes but model.num_roi_classes is "
            f"{cfg.model.num_roi_classes}; set model.num_roi_classes={shards.num_classes}"
        )


def build_pretrain_data(cfg: RunConfig, rank: int = 0, world_size: int = 1) -> PretrainData:
    data, model = cfg.data, cfg.model
    root = resolve_root(cfg)
    tokenizer = Tokenizer(under(root, data.tokenizer))
    if tokenizer.vocab_size != model.vocab_size:
        raise DataConfigError(
            f"the tokenizer at {under(root, data.tokenizer)} has {tokenizer.vocab_size} tokens but model.vocab_size "
            f"is {model.vocab_size}; set model.vocab_size={tokenizer.vocab_size}"
        )
    counter = SkipCounter(on_error=data.on_bad_record)
    regions = RegionSource(root, data.features, data.on_bad_record)
    check_shards_fit(regions.shards, cfg)

    def captions(name: str, masking: bool) -> CaptionDataset:
        path = under(root, name)
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
        corpus = under(root, data.text_corpus)
        before = counter.total
        lines = read_text_corpus(corpus, counter=counter)
        if not lines:
            skipped = f" ({counter.total - before} malformed lines skipped)" if counter.total > before else ""
            raise DataConfigError(
                f"{corpus}: the text-only corpus has no text line{skipped}; fill it, or set data.text_only_fraction=0 "
                f"to train on image-text samples only"
            )
        texts = TextOnlyDataset(lines, tokenizer, data, seed=cfg.seed)
    micro = cfg.train.micro_batch_size
    text_rows = round(micro * data.text_only_fraction) if texts is not None else 0
    try:
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
    except ValueError as exc:
        skipped = f"; {counter.total} malformed records were skipped while reading" if counter.total else ""
        raise DataConfigError(f"{under(root, data.captions)}: {exc}{skipped}") from None
    dataset = ConcatDataset([train, texts] if texts is not None else [train])
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_pretrain,
        num_workers=data.num_workers,
        pin_memory=False,
    )
    val = captions(data.val_captions, masking=False) if data.val_captions else None
    probe_path = under(root, data.probe_words) if data.probe_words else None
    probe = []
    if probe_path is not None and probe_path.is_file():
        probe = [w.strip() for w in probe_path.read_text(encoding="utf-8").splitlines() if w.strip()]
    notes = [f"reading the data: {counter.report()}"] if counter.total else []
    return PretrainData(root, tokenizer, train, texts, sampler, loader, val, probe, counter, notes)
