"""VCR's metrics and the leaderboard CSV.

A prediction record (what `VCRTask.predict` returns, one per sample):
    {"annot_id": str, "mode": "q2a" | "qa2r", "conditioned_on": answer index (qa2r) or None,
     "probs": [4 softmax probabilities], "label": the right choice or None (test)}

Metrics (the VCR paper, section 5): Q->A accuracy, QA->R accuracy (the rationale chosen given the right answer),
Q->AR accuracy (an annotation counts only when both its answer and its rationale are right).

Leaderboard CSV (visualcommonsense.com leaderboard; the column list as the dataset author's r2c repository,
models/README.md, and the original VL-BERT's vcr/function/test.py give it): one row per annot_id with columns
    annot_id, answer_0..answer_3, rationale_conditioned_on_a{i}_{j} for i, j in 0..3 (i outer),
the answer probabilities and, for each of the 4 answers, the rationale probabilities given that answer. The
evaluator takes the argmax over the answers and the argmax over the rationales conditioned on the right answer.
Each task writes its half (Q->A: annot_id + answers; QA->R: annot_id + the 16 rationale columns); `merge_leaderboard`
joins the two halves into the submission.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from .formats import NUM_CHOICES

ANSWER_COLUMNS = [f"answer_{j}" for j in range(NUM_CHOICES)]
RATIONALE_COLUMNS = [f"rationale_conditioned_on_a{i}_{j}" for i in range(NUM_CHOICES) for j in range(NUM_CHOICES)]
LEADERBOARD_COLUMNS = ["annot_id", *ANSWER_COLUMNS, *RATIONALE_COLUMNS]


def _argmax(probs: Sequence[float]) -> int:
    return max(range(len(probs)), key=lambda j: probs[j])


def choice_accuracy(predictions: Iterable[dict]) -> float:
    """Share of the labelled records whose most probable choice is the label (Q->A or QA->R accuracy)."""
    labelled = [p for p in predictions if p.get("label") is not None]
    if not labelled:
        raise ValueError("choice_accuracy: no prediction has a label (the test split has none)")
    return sum(_argmax(p["probs"]) == p["label"] for p in labelled) / len(labelled)


def q2ar_accuracy(q2a: Iterable[dict], qa2r: Iterable[dict]) -> float:
    """Joint Q->AR accuracy: per annotation, the answer argmax is right and the argmax of the rationales conditioned
    on the right answer is right. Every labelled Q->A annotation needs its QA->R record (conditioned on its label)."""
    rationale = {(p["annot_id"], p["conditioned_on"]): p for p in qa2r}
    answers = [p for p in q2a if p.get("label") is not None]
    if not answers:
        raise ValueError("q2ar_accuracy: no Q->A prediction has a label")
    right = 0
    for p in answers:
        r = rationale.get((p["annot_id"], p["label"]))
        if r is None:
            raise ValueError(
                f"q2ar_accuracy: no QA->R prediction for annot_id {p['annot_id']!r} conditioned on its right answer "
                f"{p['label']} (evaluate QA->R on the same split)"
            )
        if r.get("label") is None:
            raise ValueError(f"q2ar_accuracy: the QA->R prediction for {p['annot_id']!r} has no label")
        right += _argmax(p["probs"]) == p["label"] and _argmax(r["probs"]) == r["label"]
    return right / len(answers)


def _fmt(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def write_task_csv(predictions: Sequence[dict], path: str | os.PathLike) -> Path:
    """One task's half of the leaderboard CSV, rows in first-seen annot_id order. QA->R cells without a prediction
    (val conditions on the right answer only) are left empty; the test split fills all 16."""
    path = Path(path)
    modes = {p["mode"] for p in predictions}
    if len(modes) != 1:
        raise ValueError(f"write_task_csv: predictions of one mode expected, found {sorted(modes)}")
    mode = modes.pop()
    rows: dict[str, dict[str, str]] = {}
    for p in predictions:
        row = rows.setdefault(p["annot_id"], {"annot_id": p["annot_id"]})
        if mode == "q2a":
            row.update({c: _fmt(v) for c, v in zip(ANSWER_COLUMNS, p["probs"], strict=True)})
        else:
            i = p["conditioned_on"]
            cols = RATIONALE_COLUMNS[i * NUM_CHOICES : (i + 1) * NUM_CHOICES]
            row.update({c: _fmt(v) for c, v in zip(cols, p["probs"], strict=True)})
    columns = ["annot_id", *(ANSWER_COLUMNS if mode == "q2a" else RATIONALE_COLUMNS)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows.values())
    return path


def read_csv_rows(path: str | os.PathLike, columns: Sequence[str]) -> dict[str, dict[str, str]]:
    """annot_id -> row of a CSV that must have `columns`; ValueError naming the file and what is missing."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing columns {missing} (found {reader.fieldnames})")
        return {row["annot_id"]: row for row in reader}


def merge_leaderboard(q2a_csv: str | os.PathLike, qa2r_csv: str | os.PathLike, out: str | os.PathLike) -> Path:
    """The submission: the Q->A and QA->R halves joined on annot_id, in the Q->A file's order. Every annotation must
    be in both files and every cell filled (the QA->R half of the test split, conditioned on all 4 answers)."""
    answers = read_csv_rows(q2a_csv, ["annot_id", *ANSWER_COLUMNS])
    rationales = read_csv_rows(qa2r_csv, ["annot_id", *RATIONALE_COLUMNS])
    if set(answers) != set(rationales):
        only_a = sorted(set(answers) - set(rationales))[:3]
        only_r = sorted(set(rationales) - set(answers))[:3]
        raise ValueError(
            f"merge_leaderboard: annot_ids differ: only in {q2a_csv}: {only_a}; only in {qa2r_csv}: {only_r}"
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(LEADERBOARD_COLUMNS)
        for annot_id, a in answers.items():
            row = [annot_id, *(a[c] for c in ANSWER_COLUMNS), *(rationales[annot_id][c] for c in RATIONALE_COLUMNS)]
            if "" in row:
                raise ValueError(
                    f"merge_leaderboard: {annot_id!r} has an empty column {LEADERBOARD_COLUMNS[row.index('')]!r} "
                    "(QA->R must be run conditioned on all 4 answers: the test split does)"
                )
            writer.writerow(row)
    return out


def predictions_from_csv(path: str | os.PathLike, labels: dict[str, int | None]) -> list[dict]:
    """Q->A prediction records from a Q->A CSV (e.g. another run's), with labels from annot_id -> answer_label."""
    rows = read_csv_rows(path, ["annot_id", *ANSWER_COLUMNS])
    return [
        {
            "annot_id": annot_id,
            "mode": "q2a",
            "conditioned_on": None,
            "probs": [float(row[c]) for c in ANSWER_COLUMNS],
            "label": labels.get(annot_id),
        }
        for annot_id, row in rows.items()
    ]
