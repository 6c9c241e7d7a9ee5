"""FormatError names file, record, field, expected and found; SkipCounter raises, or counts and reports."""

import pickle

import pytest

from vlbert_fast.data.formats import FormatError, SkipCounter


def test_format_error_reads_like_the_spec():
    err = FormatError("data/cc.jsonl", 17, "boxes", "36 float32 values (9 x 4)", "35.5 (142 decoded bytes)", line=18)
    assert str(err) == (
        "data/cc.jsonl, record 17 (line 18), field 'boxes': expected 36 float32 values (9 x 4), "
        "found 35.5 (142 decoded bytes)"
    )
    assert isinstance(err, ValueError) and err.reason == "field 'boxes'"
    assert str(FormatError("x.tsv", "img_3", "num_boxes", "an integer >= 0", "'-1'")) == (
        "x.tsv, record 'img_3', field 'num_boxes': expected an integer >= 0, found '-1'"
    )


def test_message_forms():
    assert str(FormatError("something is off")) == "something is off"
    err = FormatError("a.jsonl", None, line=4, message="invalid JSON: Expecting value", reason="invalid JSON")
    assert str(err) == "a.jsonl, line 4: invalid JSON: Expecting value"
    assert err.at(record=3).record == 3 and "record 3 (line 4)" in str(err.at(record=3))


def test_format_error_survives_pickle_with_its_fields():
    err = pickle.loads(pickle.dumps(FormatError("f.tsv", 2, "boxes", "x", "y", line=3, reason="bad base64")))
    assert (err.file, err.record, err.field, err.line, err.reason) == ("f.tsv", 2, "boxes", 3, "bad base64")
    assert str(err) == "f.tsv, record 2 (line 3), field 'boxes': expected x, found y"


def test_raise_mode_raises_the_error():
    err = FormatError("f", 0, "a", "b", "c")
    with pytest.raises(FormatError) as info:
        SkipCounter("raise").handle(err)
    assert info.value is err


def test_skip_mode_counts_by_file_and_reason_and_keeps_first_examples():
    counter = SkipCounter("skip", max_examples=2)
    for i in range(3):
        counter.handle(FormatError("a.tsv", i, "boxes", "x", "y"))
    counter.handle(FormatError("b.jsonl", None, line=9, message="invalid JSON: oops", reason="invalid JSON"))
    assert counter.total == 4
    assert counter.by_reason() == {("a.tsv", "field 'boxes'"): 3, ("b.jsonl", "invalid JSON"): 1}
    assert counter.examples == [str(FormatError("a.tsv", i, "boxes", "x", "y")) for i in range(2)]
    report = counter.report()
    assert report.startswith("skipped 4 malformed records:") and "a.tsv: field 'boxes'" in report
    assert "b.jsonl: invalid JSON" in report and "a.tsv, record 0, field 'boxes'" in report


def test_merge_combines_worker_counters_after_pickle():
    workers = [SkipCounter("skip", max_examples=3) for _ in range(2)]
    workers[0].handle(FormatError("a", 1, "f", "x", "y"))
    workers[1].handle(FormatError("a", 2, "f", "x", "y"))
    workers[1].handle(FormatError("b", 3, "g", "x", "y"))
    total = SkipCounter("skip", max_examples=2)
    for worker in workers:
        total.merge(pickle.loads(pickle.dumps(worker)))
    assert total.total == 3 and total.by_reason() == {("a", "field 'f'"): 2, ("b", "field 'g'"): 1}
    assert len(total.examples) == 2


def test_empty_report_and_bad_mode():
    assert SkipCounter("skip").report() == "skipped 0 malformed records"
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip'"):
        SkipCounter("ignore")


def test_a_record_met_again_counts_once():
    """A bad record is one record however often it is read (each epoch, each DataLoader worker, each rank)."""
    counter = SkipCounter("skip")
    for _ in range(3):  # three epochs over the same bad record
        counter.handle(FormatError("cc.jsonl", 4, "caption", "words", "[]", line=5))
    counter.handle(FormatError("cc.jsonl", 5, "caption", "words", "[]", line=6))
    counter.handle(FormatError("cc.jsonl: no frcnn field"))
    counter.handle(FormatError("cc.jsonl: no frcnn field"))
    assert counter.total == 3 and counter.by_reason()[("cc.jsonl", "field 'caption'")] == 2
    other = SkipCounter("skip")
    other.handle(FormatError("cc.jsonl", 5, "caption", "words", "[]", line=6))  # seen here already
    other.handle(FormatError("cc.jsonl", 9, "caption", "words", "[]", line=10))
    assert counter.merge(other).total == 4
