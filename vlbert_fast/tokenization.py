"""A thin wrapper over `BertTokenizerFast.from_pretrained(directory)` with whole-word boundaries.

transformers 5.x silently ignores `BertTokenizerFast(vocab_file=...)` (every word becomes [UNK]), so the tokenizer
is always loaded from a directory holding `vocab.txt` (and optionally `tokenizer_config.json`), and the load is
checked: the special tokens must be in the vocabulary and an ordinary vocabulary word must not come back as [UNK].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class TokenizerError(ValueError):
    """The tokenizer directory is missing, incomplete or did not load as a WordPiece vocabulary."""


@dataclass
class Encoded:
    ids: list[int]
    """Word-piece ids, no special tokens."""
    word_ids: list[int]
    """For each id, the index of the word it came from: pieces of one word share it (whole-word masking)."""


class Tokenizer:
    def __init__(self, directory: str | Path, lowercase: bool | None = None):
        from transformers import BertTokenizerFast

        path = Path(directory)
        vocab = path / "vocab.txt"
        if not vocab.is_file():
            raise TokenizerError(f"{path}: no vocab.txt (a WordPiece vocabulary, one token per line) in this directory")
        try:
            words = [w for w in vocab.read_text(encoding="utf-8").splitlines() if w]
        except UnicodeDecodeError as exc:
            line = vocab.read_bytes()[: exc.start].count(b"\n") + 1
            raise TokenizerError(
                f"{vocab}, line {line}: expected UTF-8 text (one token per line), found byte "
                f"{exc.object[exc.start : exc.start + 1]!r} at offset {exc.start} ({exc.reason})"
            ) from None
        except OSError as exc:
            raise TokenizerError(f"{vocab}: cannot read ({exc.strerror or exc})") from None
        missing = [t for t in SPECIAL_TOKENS if t not in words]
        if missing:
            raise TokenizerError(f"{vocab}: special tokens {missing} are not in the vocabulary")
        kwargs = {} if lowercase is None else {"do_lower_case": lowercase}
        self.hf = BertTokenizerFast.from_pretrained(str(path), **kwargs)
        self.path = path
        probe = next((w for w in words if w not in SPECIAL_TOKENS and w.isalpha() and not w.startswith("##")), None)
        if probe is not None and self.hf.convert_tokens_to_ids(probe) == self.hf.unk_token_id:
            raise TokenizerError(f"{vocab}: the tokenizer did not load the vocabulary ({probe!r} maps to [UNK])")
        self.pad_id = self.hf.pad_token_id
        self.unk_id = self.hf.unk_token_id
        self.cls_id = self.hf.cls_token_id
        self.sep_id = self.hf.sep_token_id
        self.mask_id = self.hf.mask_token_id

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def encode(self, text: str | Sequence[str]) -> Encoded:
        """Word pieces of `text` (a string, or a list of words as Conceptual Captions ships captions)."""
        pretokenized = not isinstance(text, str)
        enc = self.hf(list(text) if pretokenized else text, add_special_tokens=False, is_split_into_words=pretokenized)
        word_ids = enc.word_ids()
        return Encoded(ids=list(enc["input_ids"]), word_ids=[int(w) for w in word_ids])

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode(list(ids))

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return self.hf.convert_ids_to_tokens(list(ids))

    def special_ids(self) -> set[int]:
        return {self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id}
