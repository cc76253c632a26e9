"""Playground records in the admin: read-only jobs, flags and limits (changes go through the staff pages)."""

from django.contrib import admin

from access.admin import ReadOnlyAdmin
from inference_worker.models import OutputFlag, PlaygroundLimit, PromptJob


@admin.register(PromptJob)
class PromptJobAdmin(ReadOnlyAdmin):
    list_display = ["id", "user", "release", "source", "status", "finish_reason", "prompt_tokens",
                    "completion_tokens", "queued_at", "worker", "attempt"]
    list_filter = ["status", "source", "release"]
    search_fields = ["id", "user__email", "worker"]
    date_hierarchy = "queued_at"


@admin.register(OutputFlag)
class OutputFlagAdmin(ReadOnlyAdmin):
    list_display = ["id", "job", "category", "status", "flagged_by", "created_at", "resolved_by"]
    list_filter = ["status", "category"]


@admin.register(PlaygroundLimit)
class PlaygroundLimitAdmin(ReadOnlyAdmin):
    list_display = ["user", "max_prompt_tokens", "max_new_tokens", "max_sequences", "max_concurrent", "daily_tokens",
                    "updated_by", "updated_at"]
    search_fields = ["user__email"]
