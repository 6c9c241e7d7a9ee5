"""The official VQA v2 files: question JSON, annotation JSON, and the results (submission) JSON.

Questions (v2_OpenEnded_mscoco_<split>_questions.json):
    {"info", "task_type", "data_type", "data_subtype", "license",
     "questions": [{"image_id": int, "question": str, "question_id": int}, ...]}
Annotations (v2_mscoco_<split>_annotations.json):
    {"info", "data_type", "data_subtype", "license",
     "annotations": [{"question_id", "image_id", "question_type", "answer_type", "multiple_choice_answer",
                      "answers": [{"answer": str, "answer_confidence": "yes"|"maybe"|"no", "answer_id": 1..10}]}]}
Results (what the evaluation server takes): [{"question_id": int, "answer": str}, ...]

The readers check every field the task reads and raise FormatError naming the file, the record (its index in the
list) and the field.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ...data.formats import FormatError


@dataclass
class Question:
    question_id: int
    image_id: int
    question: str


@dataclass
class Annotation:
    question_id: int
    image_id: int
    answers: list[str]
    """The human answers (10 in VQA v2), in answer_id order."""
    question_type: str
    answer_type: str
    multiple_choice_answer: str


def _load(path: Path, top_key: str) -> list:
    if not path.is_file():
        raise FormatError(str(path), message="no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(str(path), message=f"not valid JSON: {exc}") from None
    if not isinstance(data, dict) or top_key not in data:
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise FormatError(str(path), field=top_key, expected=f"an object with a {top_key!r} list", found=found)
    items = data[top_key]
    if not isinstance(items, list):
        raise FormatError(str(path), field=top_key, expected="a list", found=type(items).__name__)
    return items


def _field(path: Path, index: int, record: object, name: str, kind: type):
    if not isinstance(record, dict):
        raise FormatError(str(path), index, expected="an object", found=type(record).__name__)
    if name not in record:
        raise FormatError(str(path), index, name, expected=f"a {kind.__name__}", found="nothing (missing)")
    value = record[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise FormatError(str(path), index, name, expected=f"a {kind.__name__}", found=repr(value)[:60])
    return value


def read_questions(path: str | Path) -> list[Question]:
    path = Path(path)
    out, seen = [], set()
    for i, rec in enumerate(_load(path, "questions")):
        q = Question(_field(path, i, rec, "question_id", int), _field(path, i, rec, "image_id", int), "")
        q.question = _field(path, i, rec, "question", str)
        if not q.question.strip():
            raise FormatError(str(path), i, "question", expected="a non-empty question", found="''")
        if q.question_id in seen:
            raise FormatError(str(path), i, "question_id", expected="a unique id", found=f"{q.question_id} again")
        seen.add(q.question_id)
        out.append(q)
    return out


def read_annotations(path: str | Path) -> dict[int, Annotation]:
    """question_id -> Annotation."""
    path = Path(path)
    out: dict[int, Annotation] = {}
    for i, rec in enumerate(_load(path, "annotations")):
        answers = _field(path, i, rec, "answers", list)
        if not answers:
            raise FormatError(str(path), i, "answers", expected="the human answers (10)", found="an empty list")
        texts = []
        for j, ans in enumerate(answers):
            if not isinstance(ans, dict) or not isinstance(ans.get("answer"), str):
                raise FormatError(str(path), i, f"answers[{j}].answer", expected="a string", found=repr(ans)[:60])
            texts.append((ans.get("answer_id", j + 1), ans["answer"]))
        ann = Annotation(
            question_id=_field(path, i, rec, "question_id", int),
            image_id=_field(path, i, rec, "image_id", int),
            answers=[a for _, a in sorted(texts, key=lambda t: t[0] if isinstance(t[0], int) else 0)],
            question_type=str(rec.get("question_type", "")),
            answer_type=str(rec.get("answer_type", "")),
            multiple_choice_answer=str(rec.get("multiple_choice_answer", "")),
        )
        if ann.question_id in out:
            raise FormatError(str(path), i, "question_id", expected="a unique id", found=f"{ann.question_id} again")
        out[ann.question_id] = ann
    return out


def check_pairing(questions: Sequence[Question], annotations: dict[int, Annotation], q_path: Path, a_path: Path):
    """Every question has its annotation, on the same image."""
    for i, q in enumerate(questions):
        ann = annotations.get(q.question_id)
        if ann is None:
            raise FormatError(
                str(q_path), i, "question_id", expected=f"an annotation in {a_path}", found=f"{q.question_id}: none"
            )
        if ann.image_id != q.image_id:
            raise FormatError(str(q_path), i, "image_id", expected=f"{ann.image_id} (as in {a_path})", found=q.image_id)


def _header(split: str, data_type: str = "mscoco") -> dict:
    return {
        "info": {"description": "vlbert_fast", "version": "2.0"},
        "data_type": data_type,
        "data_subtype": split,
        "license": {"name": "", "url": ""},
    }


def write_questions(path: Path, split: str, questions: Sequence[Question]) -> None:
    data = {
        **_header(split),
        "task_type": "Open-Ended",
        "questions": [
            {"image_id": q.image_id, "question": q.question, "question_id": q.question_id} for q in questions
        ],
    }
    path.write_text(json.dumps(data) + "\n", encoding="utf-8")


def write_annotations(path: Path, split: str, annotations: Sequence[Annotation]) -> None:
    rows = [
        {
            "question_id": a.question_id,
            "image_id": a.image_id,
            "question_type": a.question_type,
            "answer_type": a.answer_type,
            "multiple_choice_answer": a.multiple_choice_answer,
            "answers": [
                {"answer": text, "answer_confidence": "yes", "answer_id": j + 1} for j, text in enumerate(a.answers)
            ],
        }
        for a in annotations
    ]
    path.write_text(json.dumps({**_header(split), "annotations": rows}) + "\n", encoding="utf-8")


def write_results(path: Path, predictions: Sequence[dict]) -> Path:
    """The submission file: [{"question_id", "answer"}] in question order."""
    rows = [{"question_id": int(p["question_id"]), "answer": str(p["answer"])} for p in predictions]
    path.write_text(json.dumps(rows) + "\n", encoding="utf-8")
    return path
