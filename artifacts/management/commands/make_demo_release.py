"""python manage.py make_demo_release: a small random-weight OPT in three variants, registered.

Builds the checkpoint with the engine's writers (so this command needs the worker extra:
torch, safetensors, tokenizers), uploads it to the configured storage and registers it.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from django.core.management.base import BaseCommand
from django.db import transaction

from access.models import Licence
from access.services.licences import licence_version_publish
from artifacts.management.commands._progress import Progress
from artifacts.models import ArtifactFile, Release, ReleaseDocument
from artifacts.services.registration import files_hash, variant_register
from artifacts.storage import S3Storage, default_location, storage_for

DEMO = Path(__file__).resolve().parents[2] / "demo"
SLUG = "opt-demo"
LICENCE_SLUG = "gatehouse-demo-licence"
VARIANTS = {
    "hf-safetensors": "Hugging Face directory: config.json, model.safetensors (float16) and the BPE tokenizer.",
    "metaseq-mp2": "metaseq consolidated model-parallel parts (2) as reshard_fsdp writes them (float16, with "
                   "metaseq's cfg and training state), gpt2-vocab.json and gpt2-merges.txt.",
    "fsdp-raw": "Raw FSDP flat shards (2 parts x 2 shards) with fairscale's shard_metadata, as OPT-175B was "
                "first published, with an md5 list.",
}
DOCUMENTS = [
    (ReleaseDocument.Kind.MODEL_CARD, "Model card", "model_card.md", ""),
    (ReleaseDocument.Kind.DATA_CARD, "Data card", "data_card.md", ""),
    (ReleaseDocument.Kind.LOGBOOK, "Training logbook", "logbook.md", ""),
    (ReleaseDocument.Kind.PAPER, "OPT: Open Pre-trained Transformer Language Models", "", "https://arxiv.org/abs/2205.01068"),
]


class Command(BaseCommand):
    help = "Build, upload and register the demo release (random weights) unless it is already complete."

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="rebuild even if the demo release is complete")

    def handle(self, *args, force: bool = False, **options):
        release = Release.objects.filter(slug=SLUG).first()
        if release and not force and self._complete(release):
            self.stdout.write(f"Demo release {SLUG} is already registered and verified.")
            return
        with tempfile.TemporaryDirectory(prefix="gatehouse-demo-") as work:
            built, parameter_count = build_demo_checkpoint(Path(work))
            release = self._release(parameter_count)
            for name, description in VARIANTS.items():
                self._upload_and_register(release, name, description, built[name])
        self.stdout.write(self.style.SUCCESS(f"Demo release {SLUG} is ready: /releases/{SLUG}/"))

    @staticmethod
    def _complete(release: Release) -> bool:
        files = ArtifactFile.objects.filter(variant__release=release)
        return (release.variants.count() == len(VARIANTS) and files.exists()
                and not files.exclude(integrity=ArtifactFile.Integrity.OK).exists())

    @transaction.atomic
    def _release(self, parameter_count: int) -> Release:
        licence, created = Licence.objects.get_or_create(
            slug=LICENCE_SLUG, defaults={"title": "Gatehouse demo model licence"}
        )
        if created or licence.current_version() is None:
            licence_version_publish(licence=licence, text_markdown=(DEMO / "licence.md").read_text(), by=None)
        release, _ = Release.objects.update_or_create(slug=SLUG, defaults={
            "name": "OPT demo (random weights)", "family": "OPT", "version": "demo", "licence": licence,
            "parameter_count": parameter_count, "approval_policy": Release.ApprovalPolicy.AUTOMATIC,
            "summary": "A tiny OPT-architecture model with random weights, in the three formats the portal "
                       "distributes, for trying every step of access and download.",
        })
        release.documents.all().delete()
        for position, (kind, title, filename, url) in enumerate(DOCUMENTS):
            ReleaseDocument.objects.create(release=release, kind=kind, title=title, url=url, position=position,
                                           body_markdown=(DEMO / filename).read_text() if filename else "")
        return release

    def _upload_and_register(self, release: Release, name: str, description: str, directory: Path) -> None:
        location = default_location(f"releases/{SLUG}/{name}")
        storage, prefix = storage_for(location)
        if isinstance(storage, S3Storage):
            storage.ensure_bucket()
        files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != "md5sum.txt")
        for path in files:
            storage.put_file(prefix + path.relative_to(directory).as_posix(), path)
        md5_list = None
        if (directory / "md5sum.txt").exists():
            md5_list = {line.split()[1]: line.split()[0] for line in (directory / "md5sum.txt").read_text().splitlines()}
        variant = variant_register(release=release, name=name, location=location, md5_list=md5_list,
                                   description=description)
        self.stdout.write(f"{SLUG}/{name}: {len(files)} files at {location}")
        files_hash(files=list(variant.files.select_related("variant")), progress=Progress(self.stdout, len(files)))


def build_demo_checkpoint(work: Path) -> tuple[dict[str, Path], int]:
    """Write the three variants under ``work``; returns their directories and the parameter count."""
    from inference_worker.engine.config import OPTConfig
    from inference_worker.engine.writers import random_state, save_fsdp_shards, save_hf, save_metaseq, train_tokenizer

    corpus = (DEMO / "corpus.txt").read_text().splitlines()
    tokenizer_dir = work / "tokenizer"
    vocab = train_tokenizer(tokenizer_dir, corpus, vocab_size=1000)
    config = OPTConfig(n_layers=4, hidden=256, n_heads=8, ffn_hidden=1024, vocab_size=(vocab + 7) // 8 * 8,
                       max_positions=512, word_embed_dim=256)
    state = random_state(config, seed=2022)
    out = {name: work / name for name in VARIANTS}
    save_hf(state, config, out["hf-safetensors"])
    train_tokenizer(out["hf-safetensors"], corpus, vocab_size=1000)
    save_metaseq(state, config, out["metaseq-mp2"], n_parts=2)
    train_tokenizer(out["metaseq-mp2"], corpus, vocab_size=1000, metaseq_names=True)
    save_fsdp_shards(state, config, out["fsdp-raw"], n_parts=2, n_shards=2)
    train_tokenizer(out["fsdp-raw"], corpus, vocab_size=1000, metaseq_names=True)
    lines = [f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.name}" for p in sorted(out["fsdp-raw"].glob("*.pt"))]
    (out["fsdp-raw"] / "md5sum.txt").write_text("\n".join(lines) + "\n")
    return out, sum(t.numel() for t in state.values())
