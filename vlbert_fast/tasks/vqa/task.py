"""VQA v2 as the original VL-BERT fine-tunes it (vqa/modules/resnet_vlbert_for_vqa.py, vqa/data/datasets/vqa.py).

Input: `[CLS] question [SEP] [MASK] [SEP]` (question tokens type 0, `[MASK]` and its `[SEP]` type 1) plus the image's
regions, every text token adding the whole-image region's visual feature. Head on the `[MASK]` position: the BERT
prediction transform (Dense + GELU + LayerNorm), initialised from the pretrained MLM head's transform, then
Dropout and Linear(H -> answers). Loss: binary cross-entropy with logits against the soft scores, averaged over
samples x answers and multiplied by the number of answers, i.e. summed over answers and averaged over samples, as
the original computes it (`F.binary_cross_entropy_with_logits(logits, label) * label.size(1)`). Prediction: the
highest-scoring answer; metric: the official accuracy (answers.py). Legend: S samples, L tokens, H hidden,
A answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ...config.finetune_run import FinetuneConfig
from ...data.collate import Example
from ...data.formats import FeatureShards, FormatError
from ...data.formats.paths import under
from ...tokenization import Tokenizer
from ...vocabulary import TokenKind
from ..base import TaskBatch, TaskSample
from ..task_regions import load_regions
from . import synth
from .answers import answer_accuracy, build_answer_vocab, load_answer_vocab, save_answer_vocab, soft_scores
from .formats import Annotation, Question, check_pairing, read_annotations, read_questions, write_results

ANSWERS_FILE = "answers.txt"


class VQAHead(nn.Module):
    """[MASK] hidden state -> transform (as BERT's MLM head) -> dropout -> answer logits."""

    def __init__(self, hidden_size: int, num_answers: int, dropout: float, layer_norm_eps: float):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_answers)
        nn.init.normal_(self.dense.weight, std=0.02)
        nn.init.zeros_(self.dense.bias)
        nn.init.xavier_uniform_(self.classifier.weight)  # the original's init of its answer classifier
        nn.init.zeros_(self.classifier.bias)

    def forward(self, hidden_BLH: torch.Tensor, task_batch: TaskBatch) -> torch.Tensor:  # [S, A]
        batch = task_batch.batch
        # The [MASK] is the second-to-last text token of each row: [CLS] question [SEP] [MASK] [SEP].
        text_len_B = (batch.token_kind == int(TokenKind.TEXT)).sum(1)
        rows = torch.arange(hidden_BLH.shape[0], device=hidden_BLH.device)
        x_SH = hidden_BLH[rows, text_len_B - 2]
        x_SH = self.layer_norm(F.gelu(self.dense(x_SH)))
        return self.classifier(self.dropout(x_SH))


class VQADataset(Dataset):
    """The questions of one or more splits, tokenised once; each item reads its image's regions from the shards."""

    def __init__(self, task: VQATask, questions: list[tuple[Question, Annotation | None, str]]):
        self.task = task
        self.items = questions
        texts = [q.question for q, _, _ in questions]
        encoded = task.tokenizer.hf(texts, add_special_tokens=False)["input_ids"] if texts else []
        self.question_ids = [ids[: task.opts.max_question_tokens] for ids in encoded]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> TaskSample:
        question, ann, source = self.items[index]
        task, tok = self.task, self.task.tokenizer
        where = f"{source}, record {question.question_id}"
        key = task.image_key.format(image_id=question.image_id)
        regions = load_regions(task.shards, key, task.opts.max_regions, task.cfg.model.visual_feature_dim, where)
        ids = [tok.cls_id, *self.question_ids[index], tok.sep_id, tok.mask_id, tok.sep_id]
        types = [0] * (len(ids) - 2) + [1, 1]
        row = Example(
            input_ids=torch.tensor(ids, dtype=torch.long),
            token_type_ids=torch.tensor(types, dtype=torch.long),
            boxes=regions.boxes,
            image_size=regions.image_size,
            region_features=regions.features,
        )
        target = {} if ann is None else {"scores": task.target_scores(ann.answers)}
        meta = {"question_id": question.question_id, "image_id": question.image_id}
        return TaskSample(rows=[row], target=target, meta=meta)


class VQATask:
    """The VQA v2 task (tasks/base.py `Task`). `run_dir` holds the answer vocabulary of a run (answers.txt)."""

    name = "vqa"
    EMBEDDED_DEFAULT: dict = {}
    """Overrides of FinetuneConfig's defaults for `vlbert-fast finetune --task vqa` (none: the defaults are VQA's)."""

    def __init__(self, cfg: FinetuneConfig, run_dir: str | Path):
        self.cfg = cfg
        self.opts = cfg.vqa
        if cfg.model.visual.end_to_end:
            raise ValueError("VQA fine-tuning reads precomputed region features; model.visual.mode=e2e is not wired in")
        self.synthetic = not self.opts.root
        self.root = synth.cached_synth_vqa(self.opts) if self.synthetic else Path(self.opts.root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"vqa.root {self.root} is not a directory")
        self.image_key = synth.IMAGE_KEY if self.synthetic else self.opts.image_key
        self.tokenizer = Tokenizer(under(self.root, self.opts.tokenizer))
        if self.tokenizer.vocab_size != cfg.model.vocab_size:
            raise ValueError(
                f"the tokenizer at {under(self.root, self.opts.tokenizer)} has {self.tokenizer.vocab_size} tokens but "
                f"model.vocab_size is {cfg.model.vocab_size}: the questions must be tokenised as in pretraining"
            )
        self.shards = FeatureShards(under(self.root, self.opts.features))
        self._annotations: dict[str, dict[int, Annotation]] = {}
        self.answers = self._answer_vocab(Path(run_dir))
        self.answer_index = {a: i for i, a in enumerate(self.answers)}

    # -- files ------------------------------------------------------------------------------------------------------
    def split_name(self, split: str) -> str:
        """ "train", "val", "test" -> the configured split names; anything else is taken as a split name."""
        return {"train": self.opts.train_split, "val": self.opts.val_split, "test": self.opts.test_split}.get(
            split, split
        )

    def train_splits(self) -> list[str]:
        return [self.opts.train_split] + ([self.opts.val_split] if self.opts.trainval else [])

    def questions_path(self, split: str) -> Path:
        return under(self.root, self.opts.questions.format(split=self.split_name(split)))

    def annotations_path(self, split: str) -> Path:
        return under(self.root, self.opts.annotations.format(split=self.split_name(split)))

    def has_annotations(self, split: str) -> bool:
        return self.annotations_path(split).is_file()

    def annotations(self, split: str) -> dict[int, Annotation]:
        name = self.split_name(split)
        if name not in self._annotations:
            self._annotations[name] = read_annotations(self.annotations_path(name))
        return self._annotations[name]

    def _answer_vocab(self, run_dir: Path) -> list[str]:
        if self.opts.answer_vocab:
            return load_answer_vocab(under(self.root, self.opts.answer_vocab))
        saved = run_dir / ANSWERS_FILE
        if saved.is_file():
            return load_answer_vocab(saved)
        lists = [a.answers for split in self.train_splits() for a in self.annotations(split).values()]
        answers = build_answer_vocab(lists, self.opts.num_answers)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_answer_vocab(answers, saved)
        return answers

    def target_scores(self, human_answers: Sequence[str]) -> torch.Tensor:  # [A]
        scores = torch.zeros(len(self.answers))
        for answer, score in soft_scores(human_answers).items():
            i = self.answer_index.get(answer)
            if i is not None:  # answers outside the vocabulary have no output (the original's <unk> gets none)
                scores[i] = score
        return scores

    # -- the Task protocol --------------------------------------------------------------------------------------------
    def datasets(self, split: str) -> VQADataset:
        names = self.train_splits() if split == "train" else [self.split_name(split)]
        items: list[tuple[Question, Annotation | None, str]] = []
        for name in names:
            q_path = self.questions_path(name)
            questions = read_questions(q_path)
            anns = None
            if self.has_annotations(name):
                anns = self.annotations(name)
                check_pairing(questions, anns, q_path, self.annotations_path(name))
            elif split == "train":
                raise FormatError(str(self.annotations_path(name)), message="no such file (training needs answers)")
            items += [(q, None if anns is None else anns[q.question_id], str(q_path)) for q in questions]
        return VQADataset(self, items)

    def build_head(self) -> VQAHead:
        m = self.cfg.model
        return VQAHead(m.hidden_size, len(self.answers), m.hidden_dropout_prob, m.layer_norm_eps)

    def init_head(self, head: nn.Module, pretraining_state: dict[str, torch.Tensor]) -> list[str]:
        """The answer head's transform from the MLM head's (the original's CLASSIFIER_PRETRAINED)."""
        pairs = {
            "dense.weight": "mlm_head.dense.weight",
            "dense.bias": "mlm_head.dense.bias",
            "layer_norm.weight": "mlm_head.layer_norm.weight",
            "layer_norm.bias": "mlm_head.layer_norm.bias",
        }
        missing = [src for src in pairs.values() if src not in pretraining_state]
        if missing:
            return [f"head.dense, head.layer_norm: not initialised, the pretrained state has no {missing}"]
        with torch.no_grad():
            params = dict(head.named_parameters())
            for dst, src in pairs.items():
                params[dst].copy_(pretraining_state[src])
        return [f"head.{dst} <- {src}" for dst, src in pairs.items()]

    def collate_targets(self, samples: Sequence[TaskSample]) -> dict[str, torch.Tensor]:
        if all("scores" in s.target for s in samples):
            return {"scores": torch.stack([s.target["scores"] for s in samples])}
        return {}

    def loss(self, logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        scores_SA = targets["scores"].float()
        return F.binary_cross_entropy_with_logits(logits.float(), scores_SA) * scores_SA.shape[1]

    def predict(self, logits: torch.Tensor, batch: TaskBatch) -> list[dict[str, Any]]:
        best = logits.argmax(-1).tolist()
        return [
            {"question_id": m["question_id"], "answer": self.answers[i]} for m, i in zip(batch.meta, best, strict=True)
        ]

    def metrics(self, predictions: list[dict[str, Any]], split: str) -> dict[str, float]:
        """The official accuracy (fraction, not percent), overall and per answer type; {} for a split without
        annotations. Every question of the split must be predicted once."""
        if not self.has_annotations(split):
            return {}
        anns = self.annotations(split)
        by_id = {int(p["question_id"]): str(p["answer"]) for p in predictions}
        missing = [q for q in anns if q not in by_id]
        if missing or len(by_id) != len(predictions):
            raise ValueError(
                f"VQA metrics on {self.split_name(split)}: {len(missing)} questions without a prediction (e.g. "
                f"{missing[:3]}) or duplicate predictions ({len(predictions)} for {len(by_id)} questions)"
            )
        per_type: dict[str, list[float]] = {}
        total = 0.0
        for qid, ann in anns.items():
            acc = answer_accuracy(by_id[qid], ann.answers)
            total += acc
            per_type.setdefault(ann.answer_type or "all", []).append(acc)
        out = {"accuracy": total / len(anns)}
        out.update({f"accuracy_{t}": sum(v) / len(v) for t, v in sorted(per_type.items())})
        return out

    def write_predictions(self, predictions: list[dict[str, Any]], split: str, out_dir: Path) -> Path:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        name = f"vqa_OpenEnded_mscoco_{self.split_name(split)}_vlbert_fast_results.json"
        ordered = sorted(predictions, key=lambda p: int(p["question_id"]))
        return write_results(out_dir / name, ordered)
