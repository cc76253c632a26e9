"""Factories for the access tests: licences, releases, institutions."""

import factory

from access.models import Institution, Licence, LicenceVersion
from artifacts.models import Release


class LicenceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Licence
        django_get_or_create = ["slug"]
        skip_postgeneration_save = True

    slug = factory.Sequence(lambda n: f"opt-licence-{n}")
    title = factory.Sequence(lambda n: f"OPT non-commercial licence {n}")

    @factory.post_generation
    def published(self, create, extracted, **kwargs):
        if create and extracted is not False and not self.versions.exists():
            from django.utils import timezone

            LicenceVersion.objects.create(licence=self, number=1, published_at=timezone.now(),
                                          text_markdown="# Licence\n\nNon-commercial research use only.")


class ReleaseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Release

    slug = factory.Sequence(lambda n: f"opt-test-{n}")
    name = factory.Sequence(lambda n: f"OPT test {n}")
    parameter_count = 175_000_000_000
    licence = factory.SubFactory(LicenceFactory)
    approval_policy = Release.ApprovalPolicy.MANUAL


class InstitutionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Institution
        django_get_or_create = ["name"]

    name = "Example University"
    email_domains = ["uni.example.edu"]
    confirmed = True  # staff gave it its e-mail domains
