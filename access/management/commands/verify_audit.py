"""Check the audit log's hash chain and its signed head, and name every row that was tampered with."""

from django.core.management.base import BaseCommand, CommandError

from access.audit import audit_verify


class Command(BaseCommand):
    help = ("Verify the audit log's hash chain and signed head; prints every problem and exits non-zero "
            "when there is any.")

    def handle(self, *args, **options) -> None:
        checked, problems = audit_verify()
        for problem in problems:
            where = f"row {problem.event_id}" if problem.event_id is not None else "checkpoint"
            self.stderr.write(f"{where}: {problem.problem}")
        if problems:
            raise CommandError(f"Audit log tampered: {len(problems)} problem(s) in {checked} rows.")
        self.stdout.write(self.style.SUCCESS(f"Audit log intact: {checked} rows verified, head signed."))
