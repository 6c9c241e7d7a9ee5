"""Bad-input matrix, the fine-tuning tasks' files: VQA v2 questions and annotations, VCR annotations and metadata,
RefCOCO+ refs, instances and detections. These are read whole and strictly (no skip mode: dropping a question or a ref
would change the official metric), so each case asserts the strict message (matrix.py)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from vlbert_fast.tasks.refcoco.refer import read_detections, read_instances, read_refs
from vlbert_fast.tasks.vcr.formats import read_metadata, read_vcr_jsonl
from vlbert_fast.tasks.vqa.formats import check_pairing, read_annotations, read_questions

from .matrix import Case, check_strict, strict_params


def file_case(id_: str, name: str, content, read, expect: list[str]) -> Case:
    def make(tmp: Path, world: Path) -> Path:
        path = tmp / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(json.dumps(content) if not isinstance(content, str) else content)
        return path

    return Case(f"{id_}", make, lambda path, counter: read(path), expect, skip_good=None)


# ----------------------------------------------------------------------------------------------------------------------
# VQA v2


def question(qid=1, image_id=7, text="what colour is the circle?") -> dict:
    return {"question_id": qid, "image_id": image_id, "question": text}


def annotation(qid=1, image_id=7, answers=None) -> dict:
    answers = [{"answer": "red", "answer_id": i + 1} for i in range(10)] if answers is None else answers
    return {"question_id": qid, "image_id": image_id, "answers": answers, "answer_type": "other"}


def vqa_q(id_: str, content, expect: list[str]) -> Case:
    return file_case(f"vqa-{id_}", "v2_OpenEnded_mscoco_train2014_questions.json", content, read_questions, expect)


def vqa_a(id_: str, content, expect: list[str]) -> Case:
    return file_case(f"vqa-{id_}", "v2_mscoco_train2014_annotations.json", content, read_annotations, expect)


def pairing(tmp: Path, world: Path) -> Path:
    q = tmp / "questions.json"
    q.write_text(json.dumps({"questions": [question(1, 7), question(2, 8)]}))
    (tmp / "annotations.json").write_text(json.dumps({"annotations": [annotation(1, 7), annotation(2, 9)]}))
    return q


VQA = [
    vqa_q("questions_not_json", "{questions: [", ["not valid JSON"]),
    vqa_q("no_questions_list", {"info": {}}, ["field 'questions'", "expected an object with a 'questions' list"]),
    vqa_q("question_id_not_int", {"questions": [question(qid="1")]}, ["record 0", "field 'question_id'", "'1'"]),
    vqa_q("missing_image_id", {"questions": [{"question_id": 1, "question": "x?"}]}, ["field 'image_id'", "missing"]),
    vqa_q("empty_question", {"questions": [question(text=" ")]}, ["field 'question'", "expected a non-empty question"]),
    vqa_q(
        "duplicate_question_id",
        {"questions": [question(1), question(1)]},
        ["record 1", "field 'question_id'", "expected a unique id, found 1 again"],
    ),
    vqa_a("no_answers", {"annotations": [annotation(answers=[])]}, ["field 'answers'", "found an empty list"]),
    vqa_a(
        "answer_not_string",
        {"annotations": [annotation(answers=[{"answer": 3}])]},
        ["record 0", "field 'answers[0].answer'", "expected a string"],
    ),
    Case(
        "vqa-annotation_on_another_image",
        pairing,
        lambda q, counter: check_pairing(
            read_questions(q), read_annotations(q.parent / "annotations.json"), q, q.parent / "annotations.json"
        ),
        ["record 1", "field 'image_id'", "expected 9 (as in", "found 8"],
        skip_good=None,
    ),
]


# ----------------------------------------------------------------------------------------------------------------------
# VCR


def vcr_record(**changes) -> dict:
    obj = {
        "annot_id": "val-0",
        "objects": ["person", "dog"],
        "img_fn": "movie/0.jpg",
        "metadata_fn": "movie/0.json",
        "question": ["what", "is", [0], "doing", "?"],
        "answer_choices": [["a"], ["b"], ["c"], ["d"]],
        "rationale_choices": [["a"], ["b"], ["c"], ["d"]],
        "answer_label": 1,
        "rationale_label": 2,
    }
    obj.update(changes)
    return obj


def vcr(id_: str, records: list, expect: list[str]) -> Case:
    text = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n"
    return file_case(f"vcr-{id_}", "val.jsonl", text, read_vcr_jsonl, expect)


def vcr_meta(id_: str, obj, expect: list[str]) -> Case:
    return file_case(f"vcr-meta_{id_}", "0.json", obj, lambda p: read_metadata(p.read_bytes(), str(p)), expect)


META = {"width": 64, "height": 48, "boxes": [[1, 1, 10, 10, 0.9]], "segms": [[[[1, 1], [9, 1], [9, 9]]]]}
VCR = [
    vcr("invalid_json", [vcr_record(), "{annot_id"], ["line 2", "invalid JSON"]),
    vcr("missing_img_fn", [vcr_record(img_fn=None)], ["line 1", "field 'img_fn'", "expected a non-empty string"]),
    vcr("three_answers", [vcr_record(answer_choices=[["a"]] * 3)], ["field 'answer_choices'", "a list of 4 token"]),
    vcr(
        "object_out_of_range",
        [vcr_record(question=["is", [5], "ok"])],
        ["field 'question'", "object indices in [0, 2)"],
    ),
    vcr("label_out_of_range", [vcr_record(answer_label=4)], ["field 'answer_label'", "expected an integer in [0, 4)"]),
    vcr(
        "duplicate_annot_id",
        [vcr_record(), vcr_record()],
        ["line 2", "field 'annot_id'", "ids unique in the file", "first on line 1"],
    ),
    vcr_meta("zero_width", {**META, "width": 0}, ["field 'width'", "expected a positive integer, found 0"]),
    vcr_meta("reversed_box", {**META, "boxes": [[10, 1, 1, 10, 0.9]]}, ["field 'boxes'", "x2 >= x1 and y2 >= y1"]),
    vcr_meta("segms_count", {**META, "segms": []}, ["field 'segms'", "a list of 1 polygon lists (one per box)"]),
]


# ----------------------------------------------------------------------------------------------------------------------
# RefCOCO+


def ref(**changes) -> dict:
    obj = {
        "ref_id": 3,
        "ann_id": 11,
        "image_id": 5,
        "category_id": 1,
        "split": "train",
        "sentences": [{"tokens": ["the", "red", "circle"], "sent_id": 9, "raw": "the red circle"}],
    }
    obj.update(changes)
    return obj


class Payload:
    def __reduce__(self):
        return (print, ("a refs pickle ran code",))


def refs_case(id_: str, refs, expect: list[str]) -> Case:
    return file_case(f"refcoco-{id_}", "refs(unc).p", pickle.dumps(refs, protocol=2), read_refs, expect)


IMAGE = {"id": 5, "width": 64, "height": 48, "file_name": "5.jpg"}
INSTANCE = {"id": 11, "image_id": 5, "bbox": [1, 2, 10, 10], "category_id": 1}
REFCOCO = [
    refs_case(
        "refs_with_code",
        [ref(extra=Payload())],
        ["refused to load the global __builtin__.print", "would run code from the file"],
    ),
    refs_case("refs_bad_split", [ref(split="holdout")], ["record '0 (ref_id 3)'", "field 'split'", "'holdout'"]),
    refs_case("refs_no_ann_id", [ref(ann_id=None)], ["field 'ann_id'", "expected an integer, found None"]),
    refs_case(
        "refs_empty_sentence",
        [ref(sentences=[{"tokens": [], "sent_id": 1}])],
        ["sentence 0", "field 'tokens'", "expected at least one word"],
    ),
    file_case(
        "refcoco-instances_negative_box",
        "instances.json",
        {"images": [IMAGE], "annotations": [{**INSTANCE, "bbox": [1, 2, -3, 10]}]},
        read_instances,
        ["record 'annotations[0]'", "field 'bbox'", "a width and height >= 0", "w=-3.0"],
    ),
    file_case(
        "refcoco-instances_unknown_image",
        "instances.json",
        {"images": [IMAGE], "annotations": [{**INSTANCE, "image_id": 6}]},
        read_instances,
        ["field 'image_id'", "the id of an image in 'images'", "found 6"],
    ),
    file_case(
        "refcoco-detections_reversed",
        "dets.json",
        {"5": [[10, 2, 1, 8]]},
        read_detections,
        ["record 5", "field 'box 0'", "x2 >= x1, y2 >= y1"],
    ),
    file_case("refcoco-detections_not_json", "dets.json", "[{", read_detections, ["line 1", "invalid JSON"]),
]


CASES = VQA + VCR + REFCOCO


@pytest.mark.parametrize("case", strict_params(CASES))
def test_strict_mode_names_the_file_record_field_and_values(case, tmp_path, small_world):
    check_strict(case, tmp_path, small_world)
