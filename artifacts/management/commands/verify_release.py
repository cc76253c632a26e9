"""python manage.py verify_release SLUG: re-hash every stored file and withhold bad ones."""

from django.core.management.base import BaseCommand, CommandError

from artifacts.management.commands._progress import Progress, report_problems, use_celery
from artifacts.models import ArtifactFile, Release
from artifacts.services.verification import files_hash_and_wait


class Command(BaseCommand):
    help = "Re-hash the stored bytes of a release's files; corrupted or missing files are withheld."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--hash-with", choices=["auto", "inline", "celery"], default="auto")

    def handle(self, *args, **options):
        release = Release.objects.filter(slug=options["slug"]).first()
        if release is None:
            raise CommandError(f"No release {options['slug']!r}.")
        files = list(ArtifactFile.objects.select_related("variant").filter(variant__release=release))
        if not files:
            raise CommandError(f"Release {release.slug} has no registered files.")
        hashed = files_hash_and_wait(
            files=files, use_celery=use_celery(options["hash_with"], len(files)), progress=Progress(self.stdout, len(files))
        )
        problems = report_problems(self.stdout, self.style, hashed)
        if problems:
            raise CommandError(f"{problems} of {len(hashed)} file(s) failed verification and are withheld.")
        self.stdout.write(self.style.SUCCESS(f"All {len(hashed)} files of {release.slug} verified."))
