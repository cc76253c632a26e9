"""REST API of the artifacts app: releases, manifests of signed links, download clients."""

from __future__ import annotations

from django.http import HttpResponse
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from access.models import ApiToken
from access.permissions import token_scope
from access.schema import error_responses
from artifacts import selectors
from artifacts.clients import render_python_client, render_shell_client
from artifacts.models import Release, Variant
from artifacts.services.downloads import ManifestRefused, manifest_issue


class VariantSummarySerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    file_count = serializers.IntegerField()
    total_size = serializers.IntegerField(allow_null=True)
    withheld_count = serializers.IntegerField()


class ReleaseSerializer(serializers.Serializer):
    slug = serializers.SlugField()
    name = serializers.CharField()
    family = serializers.CharField()
    version = serializers.CharField()
    parameter_count = serializers.IntegerField(allow_null=True)
    approval_policy = serializers.CharField()
    licence = serializers.CharField(source="licence.title")
    variants = serializers.SerializerMethodField()

    def get_variants(self, release: Release) -> list[dict]:
        return VariantSummarySerializer(selectors.variants_with_totals(release=release), many=True).data


class ManifestFileSerializer(serializers.Serializer):
    path = serializers.CharField()
    size = serializers.IntegerField()
    sha256 = serializers.CharField()
    md5 = serializers.CharField()
    url = serializers.URLField()
    downloads_remaining = serializers.IntegerField()


class WithheldFileSerializer(serializers.Serializer):
    path = serializers.CharField()
    reason = serializers.CharField()


class ManifestSerializer(serializers.Serializer):
    release = serializers.CharField()
    variant = serializers.CharField()
    expires_at = serializers.DateTimeField()
    grant_expires_at = serializers.DateTimeField()
    files = ManifestFileSerializer(many=True)
    withheld = WithheldFileSerializer(many=True)


VARIANT_PARAMETER = OpenApiParameter(
    "variant", OpenApiTypes.STR,
    description="variant name, e.g. hf-safetensors; required (400 without it) when the release has more than one")


class ReleaseListApi(APIView):
    permission_classes = [permissions.AllowAny]

    @extend_schema(responses=ReleaseSerializer(many=True))
    def get(self, request):
        return Response(ReleaseSerializer(selectors.release_list_public(), many=True).data)


@method_decorator(never_cache, name="dispatch")  # personal signed links: manifest and clients
class ManifestView(APIView):
    """Shared lookup: the release by slug, the variant by ``?variant=``, then a fresh manifest."""

    permission_classes = [permissions.IsAuthenticated, token_scope(ApiToken.Scope.DOWNLOAD)]

    def manifest(self, request, slug: str) -> dict:
        release = selectors.release_get_public(slug=slug)
        if release is None:
            raise NotFound("No such release.")
        variant = self._variant(release, request.query_params.get("variant", ""))
        try:
            return manifest_issue(
                user=request.user, release=release, variant=variant, base_url=request.build_absolute_uri("/")[:-1]
            )
        except ManifestRefused as refusal:
            raise _Refused(str(refusal), refusal.code, refusal.status) from refusal

    @staticmethod
    def _variant(release: Release, name: str) -> Variant:
        variants = list(release.variants.order_by("name"))
        names = [variant.name for variant in variants]
        if not name:
            if len(variants) == 1:
                return variants[0]
            raise ValidationError({"variant": [f"Choose a variant: {', '.join(names) or 'none registered yet'}."]})
        for variant in variants:
            if variant.name == name:
                return variant
        raise ValidationError({"variant": [f"No variant {name!r}; choose one of: {', '.join(names)}."]})

    def handle_exception(self, exc):
        if isinstance(exc, _Refused):
            return Response({"detail": exc.detail, "code": exc.code}, status=exc.status)
        return super().handle_exception(exc)


class _Refused(Exception):
    def __init__(self, detail: str, code: str, status_code: int):
        super().__init__(detail)
        self.detail, self.code, self.status = detail, code, status_code


class ManifestApi(ManifestView):
    @extend_schema(parameters=[VARIANT_PARAMETER], responses={200: ManifestSerializer, **error_responses(400)})
    def get(self, request, slug: str):
        return Response(ManifestSerializer(self.manifest(request, slug)).data, status=status.HTTP_200_OK)


class ShellClientApi(ManifestView):
    @extend_schema(parameters=[VARIANT_PARAMETER], responses={(200, "text/x-shellscript"): OpenApiTypes.STR,
                                                              **error_responses(400)})
    def get(self, request, slug: str):
        script = render_shell_client(self.manifest(request, slug))
        return _attachment(script, "download.sh", "text/x-shellscript")


class PythonClientApi(ManifestView):
    @extend_schema(parameters=[VARIANT_PARAMETER], responses={(200, "text/x-python"): OpenApiTypes.STR,
                                                              **error_responses(400)})
    def get(self, request, slug: str):
        manifest = self.manifest(request, slug)
        manifest_url = request.build_absolute_uri(f"/api/v1/releases/{slug}/manifest?variant={manifest['variant']}")
        return _attachment(render_python_client(manifest, manifest_url), "gatehouse_download.py", "text/x-python")


def _attachment(text: str, filename: str, content_type: str) -> HttpResponse:
    response = HttpResponse(text, content_type=f"{content_type}; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
