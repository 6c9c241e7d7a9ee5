"""Object references: neutral names for persons (deterministic per example), class names otherwise, "X and Y",
and the region each word piece is tagged with."""

from vlbert_fast.tasks.vcr import GENDER_NEUTRAL_NAMES, encode_tagged, object_names
from vlbert_fast.tasks.vcr.text import expand_references


def test_persons_get_neutral_names_in_order_and_others_their_class():
    assert object_names(["person", "chair", "person", "dog"]) == ["Casey", "chair", "Riley", "dog"]
    # per example: the same objects always read the same, whatever was read before
    assert object_names(["person", "chair", "person", "dog"]) == ["Casey", "chair", "Riley", "dog"]
    assert object_names(["dog", "person"]) == ["dog", "Casey"]


def test_names_cycle_after_the_last():
    names = object_names(["person"] * 15)
    assert len(GENDER_NEUTRAL_NAMES) == 13
    assert names[:13] == list(GENDER_NEUTRAL_NAMES)
    assert names[13:] == ["Casey", "Riley"]


def test_references_are_spelled_out_and_tagged_with_region_i_plus_1():
    names = ["Casey", "chair", "Riley"]
    words, regions = expand_references(["why", "is", [0, 2], "on", [1], "?"], names)
    assert words == ["why", "is", "Casey", "and", "Riley", "on", "chair", "?"]
    assert regions == [0, 0, 1, 0, 3, 0, 2, 0]  # "and" and plain words: the whole image
    words, regions = expand_references([[0, 1, 2]], names)
    assert words == ["Casey", "and", "chair", "and", "Riley"]
    assert regions == [1, 0, 2, 0, 3]


def test_word_pieces_share_their_word_region(tokenizer):
    text = encode_tagged(["why", "is", [0], "smiling", [1], "chairs"], ["Casey", "chair"], tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(text.ids)
    assert pieces == ["why", "is", "casey", "smiling", "chair", "chair", "##s"]
    assert text.regions == [0, 0, 1, 0, 2, 0, 0]
