"""GPT-2 byte-level BPE as OPT uses it, through the ``tokenizers`` package.

Files looked for in the checkpoint directory: ``tokenizer.json``, ``vocab.json`` + ``merges.txt``
(Hugging Face) or ``gpt2-vocab.json`` + ``gpt2-merges.txt`` (metaseq). OPT prepends ``</s>`` (2).
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer
from tokenizers.implementations import ByteLevelBPETokenizer

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
VOCAB_FILES = (("vocab.json", "merges.txt"), ("gpt2-vocab.json", "gpt2-merges.txt"))


def tokenizer_files(path: Path) -> list[Path]:
    """The tokenizer files present in ``path`` (what ``convert`` copies)."""
    if (path / "tokenizer.json").is_file():
        return [path / "tokenizer.json"]
    for vocab, merges in VOCAB_FILES:
        if (path / vocab).is_file() and (path / merges).is_file():
            return [path / vocab, path / merges]
    return []


class OPTTokenizer:
    def __init__(self, tokenizer: Tokenizer | ByteLevelBPETokenizer, bos_id: int = 2):
        self._tokenizer = tokenizer
        self.bos_id = bos_id
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def from_directory(cls, path: Path, bos_id: int = 2) -> OPTTokenizer:
        path = Path(path)
        files = tokenizer_files(path)
        if not files:
            raise FileNotFoundError(
                f"no tokenizer in {path}: expected tokenizer.json, vocab.json + merges.txt "
                "or gpt2-vocab.json + gpt2-merges.txt"
            )
        if len(files) == 1:
            return cls(Tokenizer.from_file(str(files[0])), bos_id)
        tokenizer = ByteLevelBPETokenizer(str(files[0]), str(files[1]))
        present = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is not None]
        tokenizer.add_special_tokens(present)
        return cls(tokenizer, bos_id)

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        ids = self._tokenizer.encode(text, add_special_tokens=False).ids
        return [self.bos_id, *ids] if add_bos else ids

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids`` without special tokens; ids past the tokenizer's vocabulary are skipped."""
        known = [i for i in ids if 0 <= i < self.vocab_size]
        return self._tokenizer.decode(known, skip_special_tokens=True)
