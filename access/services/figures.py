"""Published figures kept ready: the transparency page's aggregates and each release's expected
wait. Both read every decided application, which at a real release's scale (a million of them)
takes seconds: a request never computes them while a kept copy exists, and the beat task
``access.refresh_figures`` recomputes them every ``ACCESS_FIGURES_REFRESH_SECONDS``."""

from datetime import timedelta

from django.conf import settings
from django.core.cache import cache

from access import selectors
from artifacts.models import Release

TRANSPARENCY_KEY = "access:figures:transparency"
NO_DECISIONS = "none"  # kept for a release without recent decisions (the cache's miss is None)


def _kept_for() -> int:
    """Kept three refreshes long, so that a late or failed refresh leaves the last figures up."""
    return settings.ACCESS_FIGURES_REFRESH_SECONDS * 3


def _wait_key(release_id: int) -> str:
    return f"access:figures:expected-wait:{release_id}"


def transparency_figures_kept() -> list[dict]:
    """``selectors.transparency_figures``, as last computed (computed now only when none is kept)."""
    figures = cache.get(TRANSPARENCY_KEY)
    if figures is None:
        figures = selectors.transparency_figures()
        cache.set(TRANSPARENCY_KEY, figures, _kept_for())
    return figures


def expected_wait(*, release: Release) -> timedelta | None:
    """The release's median time to a decision over the last 30 days (``selectors.median_time_to_decision``),
    as last computed; None without decisions."""
    wait = cache.get(_wait_key(release.pk))
    if wait is None:
        wait = _expected_wait_keep(release)
    return None if wait == NO_DECISIONS else wait


def _expected_wait_keep(release: Release) -> timedelta | str:
    wait = selectors.median_time_to_decision(release=release) or NO_DECISIONS
    cache.set(_wait_key(release.pk), wait, _kept_for())
    return wait


def figures_refresh() -> int:
    """Recompute and keep every published figure; the number of releases refreshed."""
    cache.set(TRANSPARENCY_KEY, selectors.transparency_figures(), _kept_for())
    releases = list(Release.objects.all())
    for release in releases:
        _expected_wait_keep(release)
    return len(releases)
