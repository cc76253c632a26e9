"""Demo data of the access process, for `manage.py seed_demo`: a licence, and a pending application."""

from django.db import transaction

from access.models import Application, Licence, LicenceVersion, User
from access.services.applications import application_create
from access.services.licences import licence_version_publish
from artifacts.models import Release

DEMO_LICENCE_TEXT = """# OPT-175B licence agreement (demo)

1. **Non-commercial research only.** You may use the weights only for non-commercial research.
2. **No redistribution.** You may not share the weights or derivatives of them.
3. **Embargo.** No access from embargoed countries.
4. **Revocable.** Access can be revoked for any breach; it lasts one year and can be renewed.
"""
DEMO_INTENDED_USE = (
    "I study how the memorisation of rare facts in large language models depends on their frequency in the "
    "pre-training data. I will probe OPT checkpoints with controlled prompts, measure extraction rates, and "
    "publish the code and results openly; no commercial use."
)


@transaction.atomic
def demo_access_seed(*, researcher_email: str) -> Application | None:
    """The demo licence (published once), the demo release if absent, and one pending application."""
    licence, _ = Licence.objects.get_or_create(slug="opt-175b-licence",
                                               defaults={"title": "OPT-175B non-commercial licence"})
    if not LicenceVersion.objects.filter(licence=licence).exists():
        licence_version_publish(licence=licence, text_markdown=DEMO_LICENCE_TEXT, by=None)
    release, _ = Release.objects.get_or_create(slug="opt-125m-demo", defaults={
        "name": "OPT-125M (demo)", "licence": licence, "parameter_count": 125_000_000})
    researcher = User.objects.get(email=researcher_email)
    if Application.objects.filter(user=researcher, release=release).exists():
        return None
    [application] = application_create(
        user=researcher, releases=[release], submit=True, accept_licence=True, signature_name="Demo Researcher",
        fields={"legal_name": "Demo Researcher", "institution_name": "Gatehouse Demo University", "role": "researcher",
                "sector": "academia", "country": "GB", "intended_use": DEMO_INTENDED_USE},
    )
    return application
