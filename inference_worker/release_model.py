"""What the web side knows of a release's model without loading it: its tokenizer, vocabulary size
and positions, so prompts are counted against the limits before anything is queued.

Read from the release's own registered files (``config.json`` and the tokenizer files), verified
ones only, once per process for each set of file contents. Torch-free.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass

from artifacts.models import Release
from artifacts.storage import StorageError, iter_chunks, storage_for
from inference_worker.tokenization import EXPECTED, VOCAB_FILES, OPTTokenizer, tokenizer_file_names

CONFIG = "config.json"
MODEL_FILES = {CONFIG, "tokenizer.json", *(name for pair in VOCAB_FILES for name in pair)}


class ReleaseModelUnavailable(Exception):
    """The release has no usable config.json or tokenizer files; the message says what is missing."""


@dataclass(frozen=True)
class ReleaseModelInfo:
    tokenizer: OPTTokenizer
    vocab_size: int  # the model's (config.json), which may exceed the tokenizer's
    max_positions: int
    bos_id: int = 2
    eos_id: int = 2


@dataclass(frozen=True)
class _Source:
    """One verified file to read: where it is and what its bytes hash to."""

    location: str
    storage_key: str
    sha256: str
    label: str  # "variant/path", for messages


def release_model_info(*, release: Release) -> ReleaseModelInfo:
    """The model facts of ``release``, from a variant with config.json and tokenizer files
    (the Hugging Face one); failing that, config.json and tokenizer files from two variants.

    Raises ReleaseModelUnavailable when the release has no verified files of either kind, or they
    cannot be read. A release registered again (new hashes) is read again.
    """
    now = time.monotonic()
    key = (release.pk, release.created_at)
    known = _recent.get(key)
    if known is not None and known[0] > now:  # looked up moments ago: no queries on the submission path
        return known[1]
    config, tokenizer = _locate(release)
    info = _read(release.pk, config, tokenizer)
    _recent[key] = (now + RECHECK_SECONDS, info)
    return info


#: how long a release's files are trusted before they are looked up again (a re-registration shows after this)
RECHECK_SECONDS = 30.0
_recent: dict[tuple, tuple[float, ReleaseModelInfo]] = {}


def _locate(release: Release) -> tuple[_Source, tuple[tuple[str, _Source], ...]]:
    """config.json and the tokenizer files (by name) among the release's verified top-level files."""
    configs, tokenizers, unverified = [], [], []
    for variant in release.variants.order_by("name").prefetch_related("files"):
        usable = {}
        for file in variant.files.all():
            if file.path not in MODEL_FILES:
                continue
            if file.is_downloadable:
                label = f"{variant.name}/{file.path}"
                usable[file.path] = _Source(variant.location, file.storage_key, file.sha256, label)
            else:
                unverified.append(f"{variant.name}/{file.path} ({file.get_integrity_display().lower()})")
        tokenizer = tuple((name, usable[name]) for name in tokenizer_file_names(usable))
        if CONFIG in usable and tokenizer:
            return usable[CONFIG], tokenizer
        if CONFIG in usable:
            configs.append(usable[CONFIG])
        if tokenizer:
            tokenizers.append(tokenizer)
    if configs and tokenizers:
        return configs[0], tokenizers[0]
    missing = [f"no verified {CONFIG}"] if not configs else []
    missing += [f"no verified tokenizer files ({EXPECTED})"] if not tokenizers else []
    detail = f"; not verified: {', '.join(unverified)}" if unverified else ""
    raise ReleaseModelUnavailable(f"Release {release.slug} has {' and '.join(missing)}{detail}.")


@functools.lru_cache(maxsize=32)
def _read(release_id: int, config: _Source, tokenizer: tuple[tuple[str, _Source], ...]) -> ReleaseModelInfo:
    """Keyed by the release and each file's location, key and sha256: new bytes are a new entry."""
    raw = _read_bytes(config)
    try:
        values = json.loads(raw)
        # The defaults are the engine's (OPTConfig.from_hf_dict), so both sides agree on the model.
        vocab_size = int(values.get("vocab_size", 50272))
        max_positions = int(values.get("max_position_embeddings", 2048))
        bos_id, eos_id = int(values.get("bos_token_id", 2)), int(values.get("eos_token_id", 2))
    except (ValueError, TypeError, AttributeError) as error:
        raise ReleaseModelUnavailable(f"{config.label} is not an OPT config.json: {error}") from error
    files = {name: _read_bytes(source) for name, source in tokenizer}
    try:
        opt_tokenizer = OPTTokenizer.from_files(files, bos_id=bos_id)
    except Exception as error:  # tokenizers raises plain Exceptions for malformed files
        labels = ", ".join(source.label for _, source in tokenizer)
        raise ReleaseModelUnavailable(f"The tokenizer in {labels} cannot be read: {error}") from error
    if opt_tokenizer.vocab_size > vocab_size:
        raise ReleaseModelUnavailable(f"The tokenizer's {opt_tokenizer.vocab_size} tokens do not fit the model's "
                                      f"vocabulary of {vocab_size} ({config.label}).")
    return ReleaseModelInfo(tokenizer=opt_tokenizer, vocab_size=vocab_size, max_positions=max_positions,
                            bos_id=bos_id, eos_id=eos_id)


def _read_bytes(source: _Source) -> bytes:
    """The file's bytes, which must still be the ones verified at registration."""
    try:
        storage, _ = storage_for(source.location)
        content = b"".join(iter_chunks(storage.open(source.storage_key)))
    except StorageError as error:
        raise ReleaseModelUnavailable(f"{source.label} cannot be read from storage: {error}") from error
    if hashlib.sha256(content).hexdigest() != source.sha256:
        raise ReleaseModelUnavailable(f"{source.label} has changed in storage since it was verified.")
    return content
