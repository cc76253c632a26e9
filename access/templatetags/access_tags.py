"""Template helpers: licence Markdown (sanitised) and friendly durations."""

from datetime import timedelta

import markdown
import nh3
from django import template
from django.utils.safestring import mark_safe

register = template.Library()


@register.filter
def render_markdown(text: str) -> str:
    return mark_safe(nh3.clean(markdown.markdown(text or "", extensions=["extra"])))


@register.filter
def human_duration(value: timedelta | None) -> str:
    if value is None:
        return "not known yet"
    hours = value.total_seconds() / 3600
    if hours < 1:
        return "less than an hour"
    if hours < 48:
        return f"about {round(hours)} hour{'s' if round(hours) != 1 else ''}"
    return f"about {round(hours / 24)} days"


@register.filter
def signal_label(code: str) -> str:
    """A vetting signal's name in the words the queue's filter uses."""
    from access.services.vetting import SIGNAL_LABELS

    return SIGNAL_LABELS.get(code, code)
