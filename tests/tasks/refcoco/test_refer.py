"""The refer toolkit's files: refs pickle (data-only unpickler), instances.json, the three detection layouts, and
the errors malformed records get."""

import copy
import os
import pickle

import numpy as np
import pytest

from vlbert_fast.data.formats import FormatError
from vlbert_fast.tasks.refcoco.refer import (
    load_data_pickle,
    parse_detections,
    parse_instances,
    read_detections,
    read_instances,
    read_refs,
)

from .conftest import ANNOTATIONS, DETECTIONS, IMAGES, REFS


def test_refs_pickle_is_read_field_by_field(dataset_root):
    refs = read_refs(dataset_root / "refcoco+" / "refs(unc).p")
    assert [r.ref_id for r in refs] == [0, 1, 2, 3]
    assert [r.split for r in refs] == ["train", "val", "testA", "testB"]
    first = refs[0]
    assert (first.ann_id, first.image_id, first.category_id) == (101, 1, 1)
    assert [s.tokens for s in first.sentences] == [["the", "red", "man"], ["man", "on", "the", "left"]]
    assert [s.sent_id for s in first.sentences] == [0, 1]
    assert first.sentences[0].raw == "The red man" and first.file_name.endswith("_101.jpg")


def test_instances_convert_coco_boxes_once(dataset_root):
    inst = read_instances(dataset_root / "refcoco+" / "instances.json")
    assert inst.images[1].width == 100 and inst.images[1].height == 80
    assert inst.annotations[101].box == (10.0, 10.0, 30.0, 50.0)  # [x, y, w, h] = [10, 10, 20, 40]
    assert inst.by_image == {1: [101, 102], 2: [201, 202]}
    assert inst.categories == {1: "thing"}


def test_three_detection_layouts_agree(dataset_root):
    original = read_detections(dataset_root / "refcoco+" / "proposal" / "res101_coco_minus_refer_notime_dets.json")
    toolkit = parse_detections({"dets": DETECTIONS}, "dets.json")
    mapping = parse_detections({"1": [[12, 10, 32, 50], [70, 0, 80, 10]], "2": [[0, 0, 38, 40]]}, "map.json")
    for dets in (toolkit, mapping):
        assert dets.keys() == original.keys()
        for k in original:
            np.testing.assert_array_equal(dets[k], original[k])
    np.testing.assert_array_equal(original[1], [[12, 10, 32, 50], [70, 0, 80, 10]])


class Boom:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"
    Boom.marker = marker
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"ref_id": Boom()}], protocol=2))
    with pytest.raises(FormatError, match=r"refs\(unc\).p.*refused to load the global (posix|os|nt)\.system"):
        read_refs(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps(eval, protocol=4))
    with pytest.raises(FormatError, match="refused to load the global builtins.eval"):
        load_data_pickle(path)


def test_plain_containers_and_sets_load(tmp_path):
    path = tmp_path / "x.p"
    data = [{"a": (1, 2.5, "s"), "b": {3, 4}, "c": frozenset({"x"}), "d": None}]
    path.write_bytes(pickle.dumps(data, protocol=2))
    assert load_data_pickle(path) == data


def test_not_a_pickle(tmp_path):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(b"this is not a pickle")
    with pytest.raises(FormatError, match=r"refs\(unc\).p.*not a readable pickle"):
        read_refs(path)


def _broken_refs(change):
    refs = copy.deepcopy(REFS)
    change(refs)
    return refs


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r[1].pop("ann_id"), r"record '1 \(ref_id 1\)', field 'ann_id': expected an integer, found nothing"),
        (lambda r: r[2].update(split="test2"), r"record '2 \(ref_id 2\)', field 'split': expected one of"),
        (lambda r: r[0].update(image_id="1"), r"record '0 \(ref_id 0\)', field 'image_id': expected an integer"),
        (lambda r: r[0]["sentences"][1].update(tokens=[]), r"ref_id 0\), sentence 1'?, field 'tokens': expected at"),
        (lambda r: r[3].update(sentences=[]), r"record '3 \(ref_id 3\)', field 'sentences': expected a non-empty"),
        (lambda r: r.append("ref"), r"record 4: expected a dict \(one ref\), found str"),
    ],
)
def test_malformed_refs_name_file_record_and_field(tmp_path, change, message):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps(_broken_refs(change), protocol=2))
    with pytest.raises(FormatError, match=message) as err:
        read_refs(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"images": IMAGES}, r"field 'annotations': expected a list"),
        ({"images": IMAGES, "annotations": [{**ANNOTATIONS[0], "bbox": [1, 2, 3]}]}, r"annotations\[0\].*'bbox'"),
        ({"images": IMAGES, "annotations": [{**ANNOTATIONS[0], "bbox": [1, 2, -3, 4]}]}, r"width and height >= 0"),
        ({"images": IMAGES, "annotations": [{**ANNOTATIONS[0], "image_id": 9}]}, r"'image_id': expected the id of"),
        ({"images": [{**IMAGES[0], "height": 0}], "annotations": []}, r"images\[0\].*positive sizes"),
        ({"images": [{"id": 1, "width": 10}], "annotations": []}, r"record 'images\[0\]', field 'height'"),
    ],
)
def test_malformed_instances(data, message):
    with pytest.raises(FormatError, match=message) as err:
        parse_instances(data, "refcoco+/instances.json")
    assert str(err.value).startswith("refcoco+/instances.json")


def test_malformed_detections_and_invalid_json(tmp_path):
    with pytest.raises(FormatError, match=r"dets.json, record 1, field 'box'"):
        parse_detections([DETECTIONS[0], {"image_id": 1, "box": [1, 2, "3", 4]}], "dets.json")
    with pytest.raises(FormatError, match=r"dets.json, record 7, field 'box 0': expected \[x1, y1, x2, y2\]"):
        parse_detections({"7": [[5, 5, 1, 1]]}, "dets.json")
    with pytest.raises(FormatError, match="an integer image id"):
        parse_detections({"seven": []}, "dets.json")
    path = tmp_path / "instances.json"
    path.write_text('{"images": [\n  {"id": 1,,}]}')
    with pytest.raises(FormatError, match=r"instances.json, line 2: invalid JSON"):
        read_instances(path)
