"""Check the audit log's hash chain and name the first row that was tampered with."""

from django.core.management.base import BaseCommand, CommandError

from access.audit import audit_verify


class Command(BaseCommand):
    help = "Verify the audit log's hash chain; exits non-zero and names the first bad row on tampering."

    def handle(self, *args, **options) -> None:
        checked, problem = audit_verify()
        if problem is not None:
            raise CommandError(f"Audit log tampered: row {problem.event_id}: {problem.problem}. "
                               f"{checked} rows before it are intact.")
        self.stdout.write(self.style.SUCCESS(f"Audit log intact: {checked} rows verified."))
