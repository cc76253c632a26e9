"""HTML pages of the artifacts app and the ``/dl/<token>`` endpoint."""

from __future__ import annotations

import datetime

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from access.http import client_ip
from access.selectors import release_access_for
from access.services.vetting import SIGNAL_PROMISES
from artifacts import hub, selectors
from artifacts.markdown import render_markdown
from artifacts.services.downloads import Decision, ManifestRefused, download_authorize, manifest_issue
from artifacts.storage import iter_chunks

DECISION_KEY = "gatehouse.download_decision"  # set by artifacts.fast_path: the decision it took


def release_list(request: HttpRequest) -> HttpResponse:
    releases = list(selectors.release_list_public())
    return render(request, "artifacts/release_list.html", {"releases": releases})


def release_detail(request: HttpRequest, slug: str) -> HttpResponse:
    release = _public_release_or_404(slug)
    documents = [(doc, render_markdown(doc.body_markdown)) for doc in release.documents.all()]
    licence_version = release.licence.current_version()
    return render(request, "artifacts/release_detail.html", {
        "release": release,
        "documents": documents,
        "variants": selectors.variants_with_totals(release=release),
        "licence_version": licence_version,
        "licence_html": render_markdown(licence_version.text_markdown) if licence_version else "",
        "access": release_access_for(user=request.user, release=release),
        "automatic_checks": SIGNAL_PROMISES.values(),
        "bibtex": release_bibtex(release, licence_version, page=request.build_absolute_uri()),
        "review_sla_days": settings.ACCESS_REVIEW_SLA_WORKING_DAYS,
    })


def release_bibtex(release, licence_version, *, page: str) -> str:
    """A BibTeX entry for the release (its page, version and licence), for researchers' papers."""
    key = "".join(ch if ch.isalnum() else "_" for ch in f"gatehouse_{release.slug}")
    licence = f"{release.licence.title}, version {licence_version.number}" if licence_version else release.licence.title
    return (f"@misc{{{key},\n  title        = {{{{{release.name}}}}},\n"
            f"  note         = {{{release.family} {release.version}; released under {licence}}},\n"
            f"  howpublished = {{\\url{{{page}}}}},\n  year         = {{{release.created_at:%Y}}}\n}}\n")


@never_cache  # personal signed links
@login_required
def release_download(request: HttpRequest, slug: str) -> HttpResponse:
    """Fresh links, checksums, remaining download counts and the download clients."""
    release = _public_release_or_404(slug)
    variants, variant = _variants_and_chosen(request, release)
    context = {"release": release, "variants": variants, "variant": variant, "manifest": None, "refusal": ""}
    if variant is not None:
        try:
            context["manifest"] = manifest = _manifest(request, release, variant)
        except ManifestRefused as refusal:
            context["refusal"] = str(refusal)
        else:
            context["links_expire"] = datetime.datetime.fromisoformat(manifest["expires_at"])
            context["sha256sums"] = sha256sums_text(manifest)
            context["hub"] = {"endpoint": _base_url(request), "repo_id": f"{hub.NAMESPACE}/{slug}",
                              "revision": "" if hub.is_main(variant) and variant == variants[0] else variant.name}
    return render(request, "artifacts/release_download.html", context)


def _public_release_or_404(slug: str):
    release = selectors.release_get_public(slug=slug)
    if release is None:
        raise Http404("No such release.")
    return release


def _base_url(request: HttpRequest) -> str:
    """The address the portal is reached at, which links and the Hub commands use."""
    return request.build_absolute_uri("/")[:-1]


def _manifest(request: HttpRequest, release, variant) -> dict:
    """The caller's links and checksums for a variant; raises ManifestRefused saying why not."""
    return manifest_issue(user=request.user, release=release, variant=variant, base_url=_base_url(request))


def _variants_and_chosen(request: HttpRequest, release) -> tuple[list, object]:
    variants = selectors.variants_in_order(release=release)
    chosen = next((v for v in variants if v.name == request.GET.get("variant")), variants[0] if variants else None)
    return variants, chosen


def sha256sums_text(manifest: dict) -> str:
    """``sha256sum -c`` input for the manifest's files."""
    return "".join(f"{file['sha256']}  {file['path']}\n" for file in manifest["files"] if file.get("sha256"))


@never_cache
@login_required
def release_sha256sums(request: HttpRequest, slug: str) -> HttpResponse:
    """The chosen variant's checksums as a ``SHA256SUMS`` file, on the same terms as its links."""
    release = _public_release_or_404(slug)
    _, variant = _variants_and_chosen(request, release)
    if variant is None:
        raise Http404("No files have been registered for this release yet.")
    try:
        manifest = _manifest(request, release, variant)
    except ManifestRefused as refusal:
        return HttpResponse(f"{refusal}\n", status=403, content_type="text/plain; charset=utf-8")
    response = HttpResponse(sha256sums_text(manifest), content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="SHA256SUMS"'
    return response


@never_cache
@require_GET
def download(request: HttpRequest, token: str) -> HttpResponse:
    """Redirect to storage, stream, or explain the refusal. Under WSGI the fast path
    (``artifacts.fast_path``) has usually decided already and only hands over what is not a redirect."""
    return decision_response(request, request.META.get(DECISION_KEY) or link_use(request, token))


def link_use(request: HttpRequest, token: str) -> Decision:
    """Use the link ``token`` for this request (its Range included), by the download rule
    (``download_authorize``) that the Hub's ``resolve`` follows too."""
    return download_authorize(
        token=token,
        range_header=request.headers.get("Range", ""),
        ip=client_ip(request),
        user_agent=request.headers.get("User-Agent", ""),
    )


def decision_response(request: HttpRequest, decision: Decision) -> HttpResponse:
    """A redirect to storage, the bytes, or the refusal explained."""
    if decision.status == 302:
        return HttpResponseRedirect(decision.redirect_url)
    if decision.status in (200, 206):
        return _stream(decision)
    return _refusal_response(request, decision)


def _stream(decision: Decision) -> StreamingHttpResponse:
    file, size = decision.file, decision.file.size
    start, end = decision.byte_range or (0, size - 1)
    length = end - start + 1 if size else 0
    response = StreamingHttpResponse(
        iter_chunks(decision.storage.open(file.storage_key, start=start), length), status=decision.status,
        content_type="application/octet-stream",
    )
    response["Content-Length"] = str(length)
    response["Accept-Ranges"] = "bytes"
    response["Content-Disposition"] = f'attachment; filename="{file.path.rsplit("/", 1)[-1]}"'
    response["Digest"] = f"sha-256={file.sha256}"
    if decision.byte_range:
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    return response


def _refusal_response(request: HttpRequest, decision: Decision) -> HttpResponse:
    wants_json = "application/json" in request.headers.get("Accept", "")
    body = {"error": str(decision.code), "detail": decision.message}
    if wants_json:
        response = JsonResponse(body, status=decision.status)
    else:
        response = render(request, "artifacts/download_refused.html", body, status=decision.status)
    if decision.retry_after is not None:
        response["Retry-After"] = str(decision.retry_after)
    if decision.status == 416:
        response["Content-Range"] = f"bytes */{decision.extra.get('size', 0)}"
    return response
