"""The engine's tokenizer: the torch-free one in ``inference_worker/tokenization.py``."""

from ..tokenization import SPECIAL_TOKENS, VOCAB_FILES, OPTTokenizer, tokenizer_files

__all__ = ["OPTTokenizer", "SPECIAL_TOKENS", "VOCAB_FILES", "tokenizer_files"]
