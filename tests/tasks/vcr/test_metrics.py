"""Q->A, QA->R and Q->AR accuracies against hand-computed values; the leaderboard CSV halves and their merge."""

import csv

import pytest

from vlbert_fast.tasks.vcr import choice_accuracy, merge_leaderboard, q2ar_accuracy, write_task_csv
from vlbert_fast.tasks.vcr.leaderboard import LEADERBOARD_COLUMNS


def q2a(annot_id, probs, label):
    return {"annot_id": annot_id, "mode": "q2a", "conditioned_on": None, "probs": probs, "label": label}


def qa2r(annot_id, given, probs, label):
    return {"annot_id": annot_id, "mode": "qa2r", "conditioned_on": given, "probs": probs, "label": label}


# by hand: answers right for a, b, c (3 of 4); rationales right for a, c, d (3 of 4); both for a, c (2 of 4)
ANSWERS = [
    q2a("a", [0.1, 0.7, 0.1, 0.1], 1),
    q2a("b", [0.4, 0.3, 0.2, 0.1], 0),
    q2a("c", [0.1, 0.1, 0.1, 0.7], 3),
    q2a("d", [0.5, 0.2, 0.2, 0.1], 2),
]
RATIONALES = [
    qa2r("a", 1, [0.0, 0.0, 1.0, 0.0], 2),
    qa2r("b", 0, [0.6, 0.4, 0.0, 0.0], 1),
    qa2r("c", 3, [0.2, 0.5, 0.2, 0.1], 1),
    qa2r("d", 2, [0.1, 0.1, 0.1, 0.7], 3),
]


def test_accuracies_by_hand():
    assert choice_accuracy(ANSWERS) == 0.75
    assert choice_accuracy(RATIONALES) == 0.75
    assert q2ar_accuracy(ANSWERS, RATIONALES) == 0.5
    # only the rationale conditioned on the right answer counts; another conditioning is ignored
    assert q2ar_accuracy(ANSWERS, [*RATIONALES, qa2r("b", 1, [0.0, 1.0, 0.0, 0.0], 1)]) == 0.5
    assert choice_accuracy([*ANSWERS, q2a("t", [0.25] * 4, None)]) == 0.75  # test records have no label


def test_accuracy_errors():
    with pytest.raises(ValueError, match="no prediction has a label"):
        choice_accuracy([q2a("t", [0.25] * 4, None)])
    with pytest.raises(ValueError, match="no QA->R prediction for annot_id 'd' conditioned on its right answer 2"):
        q2ar_accuracy(ANSWERS, RATIONALES[:3])


def read(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_leaderboard_csv(tmp_path):
    answers = [q2a("test-0", [0.1, 0.2, 0.3, 0.4], None), q2a("test-1", [0.25] * 4, None)]
    rationales = [
        qa2r(f"test-{k}", a, [0.1 * (a + 1), 0.0, 0.5, 0.4 - 0.1 * a], None) for k in (1, 0) for a in range(4)
    ]
    a_csv = write_task_csv(answers, tmp_path / "q2a.csv")
    r_csv = write_task_csv(rationales, tmp_path / "qa2r.csv")
    assert read(a_csv)[0] == ["annot_id", "answer_0", "answer_1", "answer_2", "answer_3"]
    assert read(a_csv)[1] == ["test-0", "0.1", "0.2", "0.3", "0.4"]
    header = read(r_csv)[0]
    assert header[:3] == ["annot_id", "rationale_conditioned_on_a0_0", "rationale_conditioned_on_a0_1"]
    assert header[-1] == "rationale_conditioned_on_a3_3" and len(header) == 17
    merged = read(merge_leaderboard(a_csv, r_csv, tmp_path / "submission.csv"))
    assert merged[0] == LEADERBOARD_COLUMNS and len(LEADERBOARD_COLUMNS) == 21
    assert [row[0] for row in merged[1:]] == ["test-0", "test-1"]  # the Q->A file's order
    row = dict(zip(merged[0], merged[2], strict=True))
    assert row["answer_0"] == "0.25"
    assert row["rationale_conditioned_on_a2_0"] == repr(0.1 * 3)
    assert row["rationale_conditioned_on_a3_3"] == repr(0.4 - 0.1 * 3)


def test_val_qa2r_leaves_other_conditionings_empty_and_merge_refuses_it(tmp_path):
    a_csv = write_task_csv(ANSWERS, tmp_path / "q2a.csv")
    r_csv = write_task_csv(RATIONALES, tmp_path / "qa2r.csv")
    row = dict(zip(*read(r_csv)[:2], strict=True))
    assert row["rationale_conditioned_on_a1_2"] == "1.0" and row["rationale_conditioned_on_a0_0"] == ""
    with pytest.raises(ValueError, match="'a' has an empty column 'rationale_conditioned_on_a0_0'"):
        merge_leaderboard(a_csv, r_csv, tmp_path / "out.csv")
    with pytest.raises(ValueError, match="annot_ids differ"):
        merge_leaderboard(write_task_csv(ANSWERS[:2], tmp_path / "few.csv"), r_csv, tmp_path / "out.csv")
    with pytest.raises(ValueError, match="missing columns"):
        merge_leaderboard(r_csv, r_csv, tmp_path / "out.csv")
