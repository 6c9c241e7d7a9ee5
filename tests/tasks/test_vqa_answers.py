"""VQA v2 answers: the official normalisation, the leave-one-out soft score and accuracy, the answer vocabulary,
against values worked out by hand from the evaluation script's rules."""

import pytest

from vlbert_fast.tasks.vqa.answers import (
    answer_accuracy,
    build_answer_vocab,
    leave_one_out_score,
    load_answer_vocab,
    normalize_answer,
    process_punctuation,
    save_answer_vocab,
    soft_scores,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Yes", "yes"),
        ("  Two\n", "2"),  # whitespace, case, number word
        ("none", "0"),
        ("ten", "10"),
        ("eleven", "eleven"),  # only zero..ten are mapped
        ("The red one", "red 1"),  # article dropped, number word
        ("a dog", "dog"),
        ("an apple.", "apple"),  # period not before a digit: deleted
        ("2.5", "2.5"),  # period before a digit: kept
        ("dont", "don't"),  # contraction table
        ("isnt it", "isn't it"),
        ("Im", "im"),  # the table's capital-I keys never match after lower-casing
        ("yes!", "yes"),  # "!" not next to a space: replaced by a space, which the split drops
        ("black/white", "black white"),
        ("black / white", "black white"),  # "/" next to a space: deleted
        ("1,000", "1000"),  # a digit-comma-digit group: every listed mark is deleted
        ("red, white", "red white"),
        ("t-shirt", "t shirt"),
        ("(left)", "left"),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_punctuation_only_step_keeps_articles_and_number_words():
    assert process_punctuation("the two dogs!") == "the two dogs "
    assert process_punctuation("x, y") == "x y"  # ", " holds the comma next to a space: deleted


@pytest.mark.parametrize(
    ("matches", "expected"),
    # m of 10 humans gave the answer: (m * min(1, (m-1)/3) + (10-m) * min(1, m/3)) / 10
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_leave_one_out_score(matches, expected):
    assert leave_one_out_score(matches) == pytest.approx(expected)


def test_leave_one_out_score_rejects_impossible_counts():
    with pytest.raises(ValueError, match="matches"):
        leave_one_out_score(11)


def test_answer_accuracy_by_hand():
    humans = ["2"] * 3 + ["3"] * 2 + ["two"] + ["4"] * 4
    # the prediction "two" normalises to "2"; the humans differ, so they get the punctuation step only: "two" stays
    # "two" and 3 humans match -> 0.9
    assert answer_accuracy("Two", humans) == pytest.approx(0.9)
    assert answer_accuracy("3", humans) == pytest.approx(0.6)
    assert answer_accuracy("4", humans) == pytest.approx(1.0)
    assert answer_accuracy("5", humans) == pytest.approx(0.0)
    assert answer_accuracy("two", humans) == pytest.approx(0.9)  # the prediction is always normalised: "2"
    assert answer_accuracy("4", ["4", "5"] + ["6"] * 8) == pytest.approx(0.3)  # one human of ten


def test_answer_accuracy_identical_humans_are_not_normalised():
    # The script normalises human answers only when they differ; identical ones are compared as given.
    assert answer_accuracy("yes", ["yes"] * 10) == 1.0
    assert answer_accuracy("yes", ["Yes"] * 10) == 0.0
    # Differing human answers get the punctuation step only, without the final split: "yes!" becomes "yes " (the "!"
    # is not next to a space, so it turns into one), which the script does not match with "yes".
    assert answer_accuracy("yes", ["yes!"] * 9 + ["no"]) == 0.0
    assert answer_accuracy("yes", ["yes."] * 9 + ["no"]) == 1.0  # a period is deleted, not replaced


def test_soft_scores_normalise_and_count():
    humans = ["Two"] * 2 + ["2"] + ["3"] * 2 + ["four"] * 1 + ["yes"] * 4
    scores = soft_scores(humans)
    assert scores == pytest.approx({"2": 0.9, "3": 0.6, "4": 0.3, "yes": 1.0})


def test_answer_vocab_top_n_and_file(tmp_path):
    lists = [["Yes", "yes", "no"], ["two", "2", "no"], ["red", "yes"]]
    # normalised counts: yes 3, no 2, 2 2, red 1 -> ties broken by text
    assert build_answer_vocab(lists, 3) == ["yes", "2", "no"]
    assert build_answer_vocab(lists, 10) == ["yes", "2", "no", "red"]
    path = tmp_path / "answers.txt"
    save_answer_vocab(["yes", "2", "no"], path)
    assert load_answer_vocab(path) == ["yes", "2", "no"]
    path.write_text("yes\nno\nyes\n")
    with pytest.raises(ValueError, match="'yes' is listed twice"):
        load_answer_vocab(path)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_answer_vocab(tmp_path / "missing.txt")
