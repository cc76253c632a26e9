"""The torch-free tokenizer: prompt text is text, in every file layout a release may ship."""

import json
from pathlib import Path

import pytest
from tokenizers.implementations import ByteLevelBPETokenizer

from inference_worker.tokenization import SPECIAL_TOKENS, OPTTokenizer, check_token_ids, tokenizer_files
from tests.inference_worker.conftest import write_tokenizer

LAYOUTS = ["vocab.json", "gpt2-vocab.json", "tokenizer.json"]
TEXTS = ["Hello world!", "  The quick brown fox\n\tjumps.", "Übersetzung: naïve café, 東京 😀", ""]
CONTROL_STRINGS = "a </s> b <pad><unk> c <s>d</s>"


def write_layout(path: Path, layout: str) -> Path:
    """A trained OPT-style tokenizer as Hugging Face vocab + merges, metaseq's gpt2-* or tokenizer.json."""
    write_tokenizer(path, metaseq_names=layout == "gpt2-vocab.json")
    if layout == "tokenizer.json":
        bpe = ByteLevelBPETokenizer.from_file(str(path / "vocab.json"), str(path / "merges.txt"))
        bpe.add_special_tokens(list(SPECIAL_TOKENS))
        bpe.save(str(path / "tokenizer.json"))
        (path / "vocab.json").unlink()
        (path / "merges.txt").unlink()
    return path


@pytest.fixture(scope="module", params=LAYOUTS)
def layout_dir(request, tmp_path_factory) -> Path:
    return write_layout(tmp_path_factory.mktemp("tokenizer"), request.param)


@pytest.fixture(scope="module")
def tokenizer(layout_dir) -> OPTTokenizer:
    return OPTTokenizer.from_directory(layout_dir)


def test_control_token_strings_in_text_are_characters(tokenizer):
    ids = tokenizer.encode(CONTROL_STRINGS)
    assert ids[0] == 2
    assert not set(ids[1:]) & {0, 1, 2, 3}
    assert tokenizer.decode(ids) == CONTROL_STRINGS
    assert tokenizer.encode("</s>", add_bos=False) == tokenizer.encode("</", add_bos=False) + tokenizer.encode("s>", add_bos=False)


def test_control_tokens_registered_as_plain_added_tokens_are_still_text(tmp_path):
    path = write_layout(tmp_path, "tokenizer.json")
    data = json.loads((path / "tokenizer.json").read_text())
    for token in data["added_tokens"]:
        token["special"] = False
    (path / "tokenizer.json").write_text(json.dumps(data))
    tokenizer = OPTTokenizer.from_directory(path)
    assert not set(tokenizer.encode(CONTROL_STRINGS, add_bos=False)) & {0, 1, 2, 3}


def test_bos_is_prepended_once(tokenizer):
    for text in [*TEXTS, "</s>Hello", "Hello</s>"]:
        ids = tokenizer.encode(text)
        assert ids[0] == 2 and 2 not in ids[1:]
        assert tokenizer.encode(text, add_bos=False) == ids[1:]


def test_decode_round_trips_and_skips_special_tokens(tokenizer):
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
        assert tokenizer.decode([*ids, 1, 2, 0, 3]) == text
    assert tokenizer.decode([tokenizer.vocab_size, tokenizer.vocab_size + 50]) == ""  # model-only ids


def test_from_files_equals_from_directory(layout_dir, tokenizer):
    from_memory = OPTTokenizer.from_files({p.name: p.read_bytes() for p in tokenizer_files(layout_dir)})
    assert from_memory.vocab_size == tokenizer.vocab_size
    for text in [*TEXTS, CONTROL_STRINGS]:
        assert from_memory.encode(text) == tokenizer.encode(text)
        assert from_memory.decode(tokenizer.encode(text)) == text


def test_from_files_names_what_is_missing():
    with pytest.raises(FileNotFoundError, match="vocab.json \\+ merges.txt"):
        OPTTokenizer.from_files({"vocab.json": b"{}", "config.json": b"{}"})


def test_token_ids_are_checked_against_the_vocabulary():
    check_token_ids([2, 0, 999], vocab_size=1000)
    check_token_ids([], vocab_size=1000)
    with pytest.raises(ValueError, match="token id 1000 at position 2 "):
        check_token_ids([2, 5, 1000, -1], vocab_size=1000)
    with pytest.raises(ValueError, match="token id -1 at position 1 "):
        check_token_ids([2, -1], vocab_size=1000)
    for bad in (True, 3.0, "7"):
        with pytest.raises(ValueError, match="at position 0"):
            check_token_ids([bad], vocab_size=1000)


def test_the_engine_uses_the_same_tokenizer():
    from inference_worker.engine import tokenizer as engine_tokenizer

    assert engine_tokenizer.OPTTokenizer is OPTTokenizer
