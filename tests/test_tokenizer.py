"""The tokenizer wrapper: loads a real WordPiece vocabulary from a directory, gives whole-word boundaries."""

import pytest

from vlbert_fast.tokenization import Tokenizer, TokenizerError

VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "a",
    "red",
    "cir",
    "##cle",
    "left",
    "of",
    "the",
    "blue",
    "square",
    "tri",
    "##ang",
    "##le",
    ".",
    ",",
]


@pytest.fixture
def vocab_dir(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return tmp_path


def test_whole_word_boundaries(vocab_dir):
    tok = Tokenizer(vocab_dir)
    enc = tok.encode("A red circle, left of the blue triangle.")
    assert tok.convert_ids_to_tokens(enc.ids) == [
        "a",
        "red",
        "cir",
        "##cle",
        ",",
        "left",
        "of",
        "the",
        "blue",
        "tri",
        "##ang",
        "##le",
        ".",
    ]
    assert enc.word_ids == [0, 1, 2, 2, 3, 4, 5, 6, 7, 8, 8, 8, 9]
    assert (tok.cls_id, tok.sep_id, tok.mask_id, tok.pad_id, tok.unk_id) == (2, 3, 4, 0, 1)
    assert tok.vocab_size == len(VOCAB)


def test_pretokenized_words_keep_their_indices(vocab_dir):
    tok = Tokenizer(vocab_dir)
    enc = tok.encode(["the", "triangle", "purple"])
    assert tok.convert_ids_to_tokens(enc.ids) == ["the", "tri", "##ang", "##le", "[UNK]"]
    assert enc.word_ids == [0, 1, 1, 1, 2]


def test_missing_directory_or_special_tokens(tmp_path):
    with pytest.raises(TokenizerError, match="no vocab.txt"):
        Tokenizer(tmp_path)
    (tmp_path / "vocab.txt").write_text("a\nb\n[UNK]\n")
    with pytest.raises(TokenizerError, match=r"special tokens \['\[PAD\]', '\[CLS\]', '\[SEP\]', '\[MASK\]'\]"):
        Tokenizer(tmp_path)
