"""The Hugging Face Hub's read API over the releases (``artifacts.hub``): what ``huggingface_hub``
(``snapshot_download``, ``hf download``, ``from_pretrained``) calls with ``HF_ENDPOINT`` set to the
portal and a personal API token as ``HF_TOKEN``. Files are served by the ``/dl/`` rule."""

from __future__ import annotations

import datetime

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from access.models import ApiToken, Grant, User
from access.services.tokens import (
    ApiTokenInvalid,
    api_token_authenticate,
    api_token_from_header,
    api_token_has_scope,
    api_token_scope_missing_message,
)
from access.http import client_ip
from artifacts import hub, selectors
from artifacts.views import decision_response

HUB_FETCH_KEY = "gatehouse.hub_fetch"  # set by artifacts.fast_path: the fetch it made (False: none to make)


def _caller(request: HttpRequest) -> User | None:
    """The holder of the request's Bearer token (None when there is none); HubRefused 401/403 for a bad one."""
    header = request.headers.get("Authorization", "")
    if not header:
        return None
    try:
        token = api_token_authenticate(raw=api_token_from_header(header))
    except ApiTokenInvalid as error:
        raise hub.HubRefused(401, "", f"Invalid credentials in Authorization header: {error}") from None
    if not api_token_has_scope(token, ApiToken.Scope.DOWNLOAD):
        raise hub.HubRefused(403, "GatedRepo", api_token_scope_missing_message(ApiToken.Scope.DOWNLOAD))
    return token.user


def _refusal(error: hub.HubRefused, request: HttpRequest) -> HttpResponse:
    response = (JsonResponse({"error": error.message}, status=error.status) if request.method != "HEAD"
                else HttpResponse(status=error.status))
    if error.code:
        response["X-Error-Code"] = error.code
    message = error.message if error.status != 401 or error.code else "Invalid credentials in Authorization header"
    response["X-Error-Message"] = " ".join(message.split()).encode("ascii", "replace").decode()  # a header is ASCII
    if error.commit:
        response["X-Repo-Commit"] = error.commit
    return response


def _release_and_grant(request: HttpRequest, repo_id: str):
    """The release and the caller's grant for it, checked before anything about its files is looked
    up, so that nobody without access learns more than the public release page shows."""
    release = selectors.release_get_public(slug=hub.release_slug(repo_id))
    if release is None:
        raise hub.HubRefused(404, "RepoNotFound", f"There is no release called '{repo_id}'.")
    return release, hub.hub_access_check(user=_caller(request), release=release)


def _revision_for(request: HttpRequest, repo_id: str, revision: str) -> tuple[hub.HubRevision, Grant]:
    release, grant = _release_and_grant(request, repo_id)
    return hub.hub_revision(release=release, revision=revision), grant


def _hub_time(moment) -> str:
    """A time as the Hub writes it (UTC, ``Z``), which the client parses strictly."""
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@never_cache
@require_GET
def model_info(request: HttpRequest, repo: str, revision: str = hub.MAIN, namespace: str = "") -> HttpResponse:
    repo_id = f"{namespace}/{repo}" if namespace else repo
    try:
        found, _ = _revision_for(request, repo_id, revision)
    except hub.HubRefused as error:
        return _refusal(error, request)
    files = found.files()
    full_id = f"{hub.NAMESPACE}/{found.release.slug}"
    modified = max((f.verified_at or found.variant.registered_at for f in files), default=found.variant.registered_at)
    return JsonResponse({
        "_id": found.commit, "id": full_id, "modelId": full_id,
        "sha": found.commit, "private": False, "gated": "manual", "disabled": False, "downloads": 0, "likes": 0,
        "library_name": "transformers", "tags": [found.release.family.lower()], "lastModified": _hub_time(modified),
        "createdAt": _hub_time(found.release.created_at),
        "siblings": [{"rfilename": f.path} for f in files if f.integrity == f.Integrity.OK],
    })


@never_cache
@require_GET
def tree(request: HttpRequest, repo: str, revision: str, path: str = "", namespace: str = "") -> HttpResponse:
    repo_id = f"{namespace}/{repo}" if namespace else repo
    try:
        found, _ = _revision_for(request, repo_id, revision)
    except hub.HubRefused as error:
        return _refusal(error, request)
    prefix = f"{path.strip('/')}/" if path.strip("/") else ""
    recursive = request.GET.get("recursive", "").lower() in {"1", "true"}
    entries, folders = [], set()
    for file in found.files():
        if file.integrity != file.Integrity.OK or not file.path.startswith(prefix):
            continue
        rest = file.path[len(prefix):]
        if "/" in rest and not recursive:
            folders.add(prefix + rest.split("/", 1)[0])
            continue
        entries.append(hub.tree_entry(file))
    entries += [{"type": "directory", "oid": found.commit, "size": 0, "path": folder} for folder in sorted(folders)]
    return JsonResponse(entries, safe=False)


@never_cache
@require_http_methods(["GET", "HEAD"])
def resolve(request: HttpRequest, repo: str, revision: str, path: str, namespace: str = "") -> HttpResponse:
    """HEAD: the file's metadata (the client's cache key is its sha256). GET: the file, counted,
    limited and served (Range included) by the ``/dl/`` rule: a redirect to presigned storage, or the
    bytes themselves from local storage. Under WSGI the fast path (``artifacts.fast_path``) has
    usually answered the redirect, or fetched already and only hands over the rest."""
    repo_id = f"{namespace}/{repo}" if namespace else repo
    fetched = request.META.get(HUB_FETCH_KEY)
    if request.method == "GET" and fetched is None:
        fetched = resolve_fetch(request, repo_id=repo_id, revision=revision, path=path)
    if fetched:
        return fetched_response(request, fetched)
    try:  # what the fetch could not decide on, explained
        release, _ = _release_and_grant(request, repo_id)
        found, file = hub.hub_revision_and_file(release=release, revision=revision, path=path)
    except hub.HubRefused as error:
        return _refusal(error, request)
    if request.method == "GET":  # a commit id seen for the first time is kept now: fetch again
        fetched = resolve_fetch(request, repo_id=repo_id, revision=revision, path=path)
        if not fetched:
            return _refusal(hub.HubRefused(404, "EntryNotFound", f"{path} cannot be fetched now; try again."), request)
        return fetched_response(request, fetched)
    response = HttpResponse()
    response["Content-Length"] = str(file.size)
    return _with_file_headers(response, commit=found.commit, sha256=file.sha256, size=file.size)


def resolve_fetch(request: HttpRequest, *, repo_id: str, revision: str, path: str) -> hub.HubFetch | None:
    """``hub.hub_fetch`` for this GET (None without a Bearer token)."""
    try:
        raw = api_token_from_header(request.headers.get("Authorization", ""))
    except ApiTokenInvalid:
        return None
    return hub.hub_fetch(raw_token=raw, repo_id=repo_id, revision=revision, path=path,
                         range_header=request.headers.get("Range", ""), ip=client_ip(request),
                         user_agent=request.headers.get("User-Agent", ""))


def fetched_response(request: HttpRequest, fetched: hub.HubFetch) -> HttpResponse:
    """The redirect or the bytes with the file's Hub headers, or the refusal as the client reads it.
    A Retry-After of hours would make the client sleep that long before each of its five retries: the
    wait is in the message instead. A 403 (a licence to accept, access revoked) is gated."""
    decision = fetched.decision
    if decision.status not in (200, 206, 302):
        code = "GatedRepo" if decision.status == 403 else ""
        return _refusal(hub.HubRefused(decision.status, code, decision.message, commit=fetched.commit), request)
    return _with_file_headers(decision_response(request, decision), commit=fetched.commit, sha256=fetched.sha256,
                              size=fetched.size)


def _with_file_headers(response: HttpResponse, *, commit: str, sha256: str, size: int) -> HttpResponse:
    response["X-Repo-Commit"] = commit
    response["ETag"] = response["X-Linked-Etag"] = f'"{sha256}"'
    response["X-Linked-Size"] = str(size)
    response["Accept-Ranges"] = "bytes"
    return response
