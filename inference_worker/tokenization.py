"""GPT-2 byte-level BPE as OPT uses it, through the ``tokenizers`` package (no torch: the web side
counts prompt tokens with it, the engine encodes and decodes with it).

Tokenizer files: ``tokenizer.json``, ``vocab.json`` + ``merges.txt`` (Hugging Face) or
``gpt2-vocab.json`` + ``gpt2-merges.txt`` (metaseq). OPT prepends ``</s>`` (2) to a prompt.
Prompt text is text: ``</s>``, ``<pad>`` and the like typed in it are encoded as characters, so a
user cannot end or corrupt their own prompt with control tokens.
"""

from __future__ import annotations

import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from tokenizers import Tokenizer
from tokenizers.implementations import ByteLevelBPETokenizer

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
VOCAB_FILES = (("vocab.json", "merges.txt"), ("gpt2-vocab.json", "gpt2-merges.txt"))
EXPECTED = "tokenizer.json, vocab.json + merges.txt or gpt2-vocab.json + gpt2-merges.txt"


def tokenizer_file_names(names: Collection[str]) -> tuple[str, ...]:
    """The tokenizer files among ``names``, in order of preference; empty when there is none."""
    if "tokenizer.json" in names:
        return ("tokenizer.json",)
    for vocab, merges in VOCAB_FILES:
        if vocab in names and merges in names:
            return (vocab, merges)
    return ()


def tokenizer_files(path: Path) -> list[Path]:
    """The tokenizer files present in ``path`` (what ``convert`` copies)."""
    path = Path(path)
    present = {p.name for p in path.iterdir() if p.is_file()} if path.is_dir() else set()
    return [path / name for name in tokenizer_file_names(present)]


def check_token_ids(ids: Sequence[int], *, vocab_size: int) -> None:
    """Raise ValueError naming the first id that is not a token of a ``vocab_size`` vocabulary.

    Token-id prompts are used exactly as given, so this is the only check they get.
    """
    for position, token in enumerate(ids):
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < vocab_size:
            raise ValueError(
                f"token id {token!r} at position {position} is not in the vocabulary (0 to {vocab_size - 1})"
            )


class OPTTokenizer:
    def __init__(self, tokenizer: Tokenizer, bos_id: int = 2):
        # OPT's control tokens are special (decode skips them) whichever file they came from, and
        # special-token strings in the input are split like any other text.
        tokenizer.add_special_tokens([t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is not None])
        tokenizer.encode_special_tokens = True
        self._tokenizer = tokenizer
        self.bos_id = bos_id
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def from_directory(cls, path: Path, bos_id: int = 2) -> OPTTokenizer:
        path = Path(path)
        files = tokenizer_files(path)
        if not files:
            raise FileNotFoundError(f"no tokenizer in {path}: expected {EXPECTED}")
        if len(files) == 1:
            return cls(Tokenizer.from_file(str(files[0])), bos_id)
        # ByteLevelBPETokenizer wraps a Tokenizer; its serialized form gives that Tokenizer itself.
        bpe = ByteLevelBPETokenizer.from_file(str(files[0]), str(files[1]))
        return cls(Tokenizer.from_str(bpe.to_str()), bos_id)

    @classmethod
    def from_files(cls, files: Mapping[str, bytes], bos_id: int = 2) -> OPTTokenizer:
        """From file contents by name, e.g. ``{"vocab.json": b"...", "merges.txt": b"..."}``."""
        names = tokenizer_file_names(files)
        if not names:
            raise FileNotFoundError(f"no tokenizer among {sorted(files)}: expected {EXPECTED}")
        if names == ("tokenizer.json",):
            return cls(Tokenizer.from_buffer(files["tokenizer.json"]), bos_id)
        # The library's own reader of vocab + merges, so the ids are from_directory's.
        with tempfile.TemporaryDirectory(prefix="opt-tokenizer-") as directory:
            for name in names:
                (Path(directory) / name).write_bytes(files[name])
            return cls.from_directory(Path(directory), bos_id)

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """Ids of ``text`` read as plain text, after one ``</s>`` when ``add_bos``."""
        ids = self._tokenizer.encode(text, add_special_tokens=False).ids
        return [self.bos_id, *ids] if add_bos else ids

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids`` without special tokens; ids past the tokenizer's vocabulary are skipped."""
        known = [i for i in ids if 0 <= i < self.vocab_size]
        return self._tokenizer.decode(known, skip_special_tokens=True)
