"""Demo data of the access process, for `manage.py seed_demo`: a pending application to the demo release."""

from django.db import transaction

from access.models import Application, User
from access.services.applications import application_create
from access.services.institutions import institution_confirm, institution_resolve
from artifacts.models import Release

DEMO_INSTITUTION = "Gatehouse Demo University"
DEMO_INTENDED_USE = (
    "I study how the memorisation of rare facts in large language models depends on their frequency in the "
    "pre-training data. I will probe OPT checkpoints with controlled prompts, measure extraction rates, and "
    "publish the code and results openly; no commercial use."
)


@transaction.atomic
def demo_access_seed(*, researcher_email: str, release_slug: str) -> Application | None:
    """One submitted application of the demo researcher, for reviewers to try the queue on.

    Its e-mail domain is not academic, so vetting leaves it for a reviewer even though the demo
    release approves automatically when every signal is green.
    """
    release = Release.objects.filter(slug=release_slug).first()
    researcher = User.objects.get(email=researcher_email)
    institution_confirm(institution=institution_resolve(name=DEMO_INSTITUTION, by=None), by=None)  # staff's own data
    if release is None or Application.objects.filter(user=researcher, release=release).exists():
        return None
    [application] = application_create(
        user=researcher, releases=[release], submit=True, accept_licence=True, signature_name="Demo Researcher",
        ip_address="127.0.0.1", user_agent="seed_demo (signed for the demo researcher on this machine)",
        fields={"legal_name": "Demo Researcher", "institution_name": DEMO_INSTITUTION, "role": "researcher",
                "sector": "academia", "country": "GB", "intended_use": DEMO_INTENDED_USE},
    )
    return application
