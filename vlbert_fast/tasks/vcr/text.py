"""VCR's text with object references -> word pieces, each tagged with the region whose visual feature it adds.

A VCR token is a word or a list of detection indices ("[0, 2]" = objects 0 and 2). A reference becomes the objects'
names joined by "and" ("Casey and chair"): a person gets a gender-neutral name, any other object its class name.
The word pieces of an object's name are tagged with that object's region, i + 1 (region 0 is the whole image);
every other piece, the joining "and" included, is tagged with region 0 (the original's tags for untagged words when
the whole image is a box).

Names (the original's list, vcr/data/datasets/vcr.py, GENDER_NEUTRAL_NAMES): the persons of an example take the
names in order of their index in `objects`, cycling after the last. The original carries its counter over from
one example to the next, so a person's name there depends on which examples that worker loaded before; ours starts
at the first name in every example, so an example always reads the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ...tokenization import Tokenizer
from .formats import Token

GENDER_NEUTRAL_NAMES = (
    "Casey",
    "Riley",
    "Jessie",
    "Jackie",
    "Avery",
    "Jaime",
    "Peyton",
    "Kerry",
    "Jody",
    "Kendall",
    "Frankie",
    "Pat",
    "Quinn",
)
PERSON = "person"
WHOLE_IMAGE = 0


def object_names(objects: Sequence[str]) -> list[str]:
    """The word each object is called by in the text: persons get the neutral names in order, others their class."""
    names, persons = [], 0
    for cls in objects:
        if cls == PERSON:
            names.append(GENDER_NEUTRAL_NAMES[persons % len(GENDER_NEUTRAL_NAMES)])
            persons += 1
        else:
            names.append(cls)
    return names


def expand_references(tokens: Sequence[Token], names: Sequence[str]) -> tuple[list[str], list[int]]:
    """(words, region of each word): references spelled out as "X and Y", their names tagged with region i + 1."""
    words: list[str] = []
    regions: list[int] = []
    for tok in tokens:
        if isinstance(tok, str):
            words.append(tok)
            regions.append(WHOLE_IMAGE)
            continue
        for k, index in enumerate(tok):
            if k:
                words.append("and")
                regions.append(WHOLE_IMAGE)
            words.append(names[index])
            regions.append(index + 1)
    return words, regions


@dataclass
class TaggedText:
    ids: list[int]
    """Word-piece ids, no special tokens."""
    regions: list[int]
    """For each id, the region whose visual feature it adds (0 the whole image, i + 1 object i)."""

    def __len__(self) -> int:
        return len(self.ids)

    def __add__(self, other: TaggedText) -> TaggedText:
        return TaggedText(self.ids + other.ids, self.regions + other.regions)

    def truncated(self, length: int) -> TaggedText:
        return TaggedText(self.ids[:length], self.regions[:length])


def encode_tagged(tokens: Sequence[Token], names: Sequence[str], tokenizer: Tokenizer) -> TaggedText:
    """Word pieces of a VCR token list with the region of each piece (a word's pieces share its region)."""
    words, regions = expand_references(tokens, names)
    enc = tokenizer.encode(words)
    return TaggedText(list(enc.ids), [regions[w] for w in enc.word_ids])
