"""Create (or refresh) the demo accounts and print their logins once."""

import secrets

from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

DEMO_ACCOUNTS = [
    {"email": "reviewer@gatehouse.example", "first_name": "Demo", "last_name": "Reviewer", "is_staff": True,
     "is_superuser": True, "role": "staff reviewer (must set up two-factor authentication at first review/admin visit)"},
    {"email": "researcher@gatehouse.example", "first_name": "Demo", "last_name": "Researcher", "is_staff": False,
     "is_superuser": False, "role": "researcher"},
]


class Command(BaseCommand):
    help = "Create the demo reviewer and researcher with fresh random passwords, and print the logins."

    def handle(self, *args, **options) -> None:
        logins = []
        with transaction.atomic():
            for account in DEMO_ACCOUNTS:
                password = secrets.token_urlsafe(12)
                logins.append((account["role"], account["email"], password))
                self._upsert(account, password)
            from access.demo import demo_access_seed

            demo_access_seed(researcher_email="researcher@gatehouse.example", release_slug="opt-demo")
        self.stdout.write("Demo logins (new random passwords, shown only now):")
        for role, email, password in logins:
            self.stdout.write(f"  {role}\n    e-mail:   {email}\n    password: {password}")

    @staticmethod
    def _upsert(account: dict, password: str) -> None:
        user, _ = get_user_model().objects.update_or_create(
            email=account["email"],
            defaults={key: account[key] for key in ("first_name", "last_name", "is_staff", "is_superuser")},
        )
        user.set_password(password)
        user.save()
        EmailAddress.objects.update_or_create(
            user=user, email=user.email, defaults={"verified": True, "primary": True}
        )
