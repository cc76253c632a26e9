"""python manage.py register_release SLUG --variant NAME --from LOCATION [--md5-list FILE]"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from access.models import Licence
from artifacts.management.commands._progress import Progress, report_problems, use_celery
from artifacts.models import Release
from artifacts.services.registration import RegistrationError, md5_list_parse, variant_register
from artifacts.services.verification import files_hash_and_wait


class Command(BaseCommand):
    help = (
        "Record every file of a release variant stored at s3://bucket/prefix or a local directory, "
        "and compute its sha256 and md5 from the stored bytes (streamed)."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug", help="release slug, e.g. opt-175b")
        parser.add_argument("--variant", required=True, help="variant name, e.g. metaseq-mp8")
        parser.add_argument("--from", dest="location", required=True, help="s3://bucket/prefix or /local/dir")
        parser.add_argument("--md5-list", type=Path, help="published md5 list to check every file against")
        parser.add_argument("--description", default="", help="what this variant is")
        parser.add_argument("--name", help="release name (creates the release when it does not exist)")
        parser.add_argument("--licence", help="slug of the licence gating a new release")
        parser.add_argument("--parameters", type=int, help="parameter count of a new release")
        parser.add_argument("--approval-policy", choices=Release.ApprovalPolicy.values, default="manual")
        parser.add_argument("--hash-with", choices=["auto", "inline", "celery"], default="auto",
                            help="auto: Celery tasks in parallel for big variants, inline for small ones")

    def handle(self, *args, **options):
        release = self._release(options)
        md5s = None
        if options["md5_list"]:
            try:
                md5s = md5_list_parse(options["md5_list"].read_text())
            except (OSError, RegistrationError) as error:
                raise CommandError(f"Cannot read the md5 list: {error}") from error
        try:
            variant = variant_register(
                release=release, name=options["variant"], location=options["location"], md5_list=md5s,
                description=options["description"],
            )
        except RegistrationError as error:
            raise CommandError(str(error)) from error
        files = list(variant.files.select_related("variant").exclude(integrity="missing"))
        celery = use_celery(options["hash_with"], len(files))
        self.stdout.write(
            f"Registered {len(files)} files of {release.slug}/{variant.name}; hashing "
            f"{'in parallel Celery tasks' if celery else 'here'}..."
        )
        hashed = files_hash_and_wait(files=files, use_celery=celery, progress=Progress(self.stdout, len(files)))
        problems = report_problems(self.stdout, self.style, hashed + list(variant.files.filter(integrity="missing")))
        if problems:
            raise CommandError(f"{problems} file(s) failed their checks and are withheld from manifests.")
        self.stdout.write(self.style.SUCCESS(f"All {len(hashed)} files of {release.slug}/{variant.name} verified."))

    def _release(self, options) -> Release:
        release = Release.objects.filter(slug=options["slug"]).first()
        if release:
            return release
        if not options["name"] or not options["licence"]:
            raise CommandError(f"Release {options['slug']!r} does not exist: give --name and --licence to create it.")
        licence = Licence.objects.filter(slug=options["licence"]).first()
        if licence is None:
            raise CommandError(f"No licence {options['licence']!r}.")
        return Release.objects.create(
            slug=options["slug"], name=options["name"], licence=licence, parameter_count=options["parameters"],
            approval_policy=options["approval_policy"],
        )
