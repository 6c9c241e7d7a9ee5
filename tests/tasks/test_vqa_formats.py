"""VQA v2 readers on small files in the exact official format, malformed records, and the results writer."""

import json

import pytest

from vlbert_fast.data.formats import FormatError
from vlbert_fast.tasks.vqa.formats import check_pairing, read_annotations, read_questions, write_results

QUESTIONS = {
    "info": {"description": "This is v2.0 of the VQA dataset.", "version": "2.0", "year": 2017},
    "task_type": "Open-Ended",
    "data_type": "mscoco",
    "license": {"url": "http://creativecommons.org/licenses/by/4.0/", "name": "Creative Commons Attribution 4.0"},
    "data_subtype": "val2014",
    "questions": [
        {"image_id": 262148, "question": "Where is he looking?", "question_id": 262148000},
        {"image_id": 262148, "question": "What are the people in the background doing?", "question_id": 262148001},
        {"image_id": 393225, "question": "Is the bowl full?", "question_id": 393225002},
    ],
}


def _answers(*texts):
    return [{"answer": t, "answer_confidence": "yes", "answer_id": i + 1} for i, t in enumerate(texts)]


ANNOTATIONS = {
    "info": QUESTIONS["info"],
    "license": QUESTIONS["license"],
    "data_subtype": "val2014",
    "data_type": "mscoco",
    "annotations": [
        {
            "question_type": "none of the above",
            "multiple_choice_answer": "down",
            "answers": _answers(*(["down"] * 6 + ["at table", "skateboard", "down", "table"])),
            "image_id": 262148,
            "answer_type": "other",
            "question_id": 262148000,
        },
        {
            "question_type": "what are the",
            "multiple_choice_answer": "watching",
            "answers": _answers(*(["watching"] * 7 + ["spectating", "watching", "watching"])),
            "image_id": 262148,
            "answer_type": "other",
            "question_id": 262148001,
        },
        {
            "question_type": "is the",
            "multiple_choice_answer": "no",
            "answers": _answers(*(["no"] * 8 + ["yes", "no"])),
            "image_id": 393225,
            "answer_type": "yes/no",
            "question_id": 393225002,
        },
    ],
}


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_reads_the_official_files(tmp_path):
    q_path = _write(tmp_path, "v2_OpenEnded_mscoco_val2014_questions.json", QUESTIONS)
    a_path = _write(tmp_path, "v2_mscoco_val2014_annotations.json", ANNOTATIONS)
    questions = read_questions(q_path)
    assert [(q.question_id, q.image_id) for q in questions] == [
        (262148000, 262148),
        (262148001, 262148),
        (393225002, 393225),
    ]
    assert questions[2].question == "Is the bowl full?"
    anns = read_annotations(a_path)
    assert sorted(anns) == [262148000, 262148001, 393225002]
    a = anns[262148000]
    assert len(a.answers) == 10 and a.answers[6] == "at table"
    assert (a.answer_type, a.question_type, a.multiple_choice_answer) == ("other", "none of the above", "down")
    check_pairing(questions, anns, q_path, a_path)


def test_answers_are_taken_in_answer_id_order(tmp_path):
    data = json.loads(json.dumps(ANNOTATIONS))
    data["annotations"][0]["answers"].reverse()
    anns = read_annotations(_write(tmp_path, "a.json", data))
    assert anns[262148000].answers[6] == "at table"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("questions"), "field 'questions': expected an object with a 'questions' list"),
        (lambda d: d["questions"][1].pop("image_id"), "record 1, field 'image_id': expected a int, found nothing"),
        (lambda d: d["questions"][2].update(question_id="393225002"), "record 2, field 'question_id': expected a int"),
        (lambda d: d["questions"][0].update(question=" "), "record 0, field 'question': expected a non-empty"),
        (lambda d: d["questions"][2].update(question_id=262148000), "record 2, field 'question_id': expected a unique"),
        (lambda d: d.update(questions={"a": 1}), "field 'questions': expected a list, found dict"),
    ],
)
def test_malformed_questions(tmp_path, mutate, message):
    data = json.loads(json.dumps(QUESTIONS))
    mutate(data)
    path = _write(tmp_path, "q.json", data)
    with pytest.raises(FormatError) as err:
        read_questions(path)
    assert str(path) in str(err.value) and message in str(err.value)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["annotations"][1].update(answers=[]), "record 1, field 'answers': expected the human answers"),
        (lambda d: d["annotations"][2]["answers"][3].pop("answer"), "record 2, field 'answers[3].answer'"),
        (lambda d: d["annotations"][0].pop("question_id"), "record 0, field 'question_id'"),
        (lambda d: d["annotations"][1].update(image_id=None), "record 1, field 'image_id': expected a int, found None"),
    ],
)
def test_malformed_annotations(tmp_path, mutate, message):
    data = json.loads(json.dumps(ANNOTATIONS))
    mutate(data)
    path = _write(tmp_path, "a.json", data)
    with pytest.raises(FormatError) as err:
        read_annotations(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_invalid_json_and_missing_file(tmp_path):
    path = tmp_path / "q.json"
    path.write_text('{"questions": [')
    with pytest.raises(FormatError, match="q.json: not valid JSON"):
        read_questions(path)
    with pytest.raises(FormatError, match="nope.json: no such file"):
        read_annotations(tmp_path / "nope.json")


def test_pairing_errors_name_the_question(tmp_path):
    q_path, a_path = tmp_path / "q.json", tmp_path / "a.json"
    questions = read_questions(_write(tmp_path, "q.json", QUESTIONS))
    anns = read_annotations(_write(tmp_path, "a.json", ANNOTATIONS))
    del anns[262148001]
    with pytest.raises(FormatError, match=r"q.json, record 1, field 'question_id': expected an annotation"):
        check_pairing(questions, anns, q_path, a_path)
    anns = read_annotations(a_path)
    anns[393225002].image_id = 7
    with pytest.raises(FormatError, match=r"record 2, field 'image_id': expected 7"):
        check_pairing(questions, anns, q_path, a_path)


def test_results_writer(tmp_path):
    path = write_results(tmp_path / "r.json", [{"question_id": 5, "answer": "yes", "extra": 1}])
    assert json.loads(path.read_text()) == [{"question_id": 5, "answer": "yes"}]
