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
    # The humans disagree, so both sides get the punctuation, number-word, article and contraction steps: "two"
    # becomes "2" and 4 humans match "2" -> 1.0.
    assert answer_accuracy("2", humans) == pytest.approx(1.0)
    assert answer_accuracy("Two", humans) == pytest.approx(1.0)
    assert answer_accuracy("3", humans) == pytest.approx(0.6)
    assert answer_accuracy("4", humans) == pytest.approx(1.0)
    assert answer_accuracy("5", humans) == pytest.approx(0.0)
    assert answer_accuracy("4", ["4", "5"] + ["6"] * 8) == pytest.approx(0.3)  # one human of ten


def test_disagreeing_humans_number_words_both_sides():
    # The case: a prediction "2" against humans who wrote "two" while disagreeing. Before the script's 2021
    # fix the humans got the punctuation step only and "2" scored 0.
    humans = ["two"] * 3 + ["three"] * 7
    assert answer_accuracy("2", humans) == pytest.approx(0.9)
    assert answer_accuracy("two", humans) == pytest.approx(0.9)
    assert answer_accuracy("3", humans) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("prediction", "humans", "expected"),
    [
        # articles: dropped on both sides when the humans disagree
        ("the dog", ["a dog"] * 2 + ["dog"] * 2 + ["cat"] * 6, 1.0),
        ("dog", ["the dog"] * 3 + ["cat"] * 7, 0.9),
        # contractions: "dont" gets its apostrophe on both sides
        ("dont know", ["don't know"] * 2 + ["dont know"] + ["no"] * 7, 0.9),
        # punctuation next to a space is deleted, elsewhere replaced by a space (which the split drops)
        ("yes", ["yes!"] * 9 + ["no"], 1.0),
        ("yes", ["yes."] * 9 + ["no"], 1.0),
        ("black and white", ["black & white"] * 4 + ["black and white"] * 2 + ["gray"] * 4, 0.6),
        ("black white", ["black/white"] * 4 + ["gray"] * 6, 1.0),
        ("1000", ["1,000"] * 4 + ["100"] * 6, 1.0),  # a digit-comma-digit group: the comma is deleted
        ("2.5", ["2.5"] * 4 + ["2"] * 6, 1.0),  # a period before a digit stays
        # case: lower-cased on both sides when the humans disagree
        ("Red", ["red"] * 5 + ["RED"] + ["blue"] * 4, 1.0),
    ],
)
def test_disagreeing_humans_are_normalised_like_the_prediction(prediction, humans, expected):
    assert answer_accuracy(prediction, humans) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("prediction", "humans", "expected"),
    [
        ("yes", ["yes"] * 10, 1.0),
        (" yes\n", ["yes"] * 10, 1.0),  # whitespace is the only processing when the humans agree
        ("\tyes", ["yes\n"] * 10, 1.0),
        ("Yes", ["yes"] * 10, 0.0),  # no lower-casing
        ("2", ["two"] * 10, 0.0),  # no number words
        ("two", ["two"] * 10, 1.0),
        ("dog", ["the dog"] * 10, 0.0),  # no articles
        ("yes", ["yes!"] * 10, 0.0),  # no punctuation
        ("dont", ["don't"] * 10, 0.0),  # no contractions
    ],
)
def test_agreeing_humans_are_compared_as_given(prediction, humans, expected):
    assert answer_accuracy(prediction, humans) == pytest.approx(expected)


def test_agreement_is_decided_after_the_whitespace_step_only():
    # " yes" and "yes" agree after step 1, so nothing more is done: "Yes" does not match.
    assert answer_accuracy("Yes", ["yes"] * 5 + [" yes"] * 5) == 0.0
    # "Yes" and "yes" disagree, so both sides are lower-cased.
    assert answer_accuracy("yes", ["Yes"] * 5 + ["yes"] * 5) == 1.0


def test_leave_one_out_over_mixed_forms():
    # 2 humans wrote "2", 1 wrote "two": after normalisation 3 match; for each of the 10 subsets of 9 humans:
    # the 3 subsets without one of them see 2 matches (2/3), the 7 others see 3 (1) -> (3 * 2/3 + 7) / 10 = 0.9
    humans = ["2", "2", "two"] + ["3"] * 7
    assert answer_accuracy("2", humans) == pytest.approx(0.9)


def test_at_most_32_periods_are_deleted():
    # The script passes re.UNICODE (32) as re.sub's count: the 33rd period not before a digit stays.
    assert process_punctuation("." * 33) == "."
    assert process_punctuation("a.b.c") == "abc"


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
