"""The OpenAPI schema (drf-spectacular): the Bearer token scheme, and the error answers every endpoint gives."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "access.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "A personal API token created at /access/tokens/: `Authorization: Bearer <token>`. "
                               "Its scopes limit it: `download` (manifests, download scripts), `inference` "
                               "(the playground), `review` (the review endpoints)."}


_DETAIL = {"type": "object", "properties": {"detail": {"type": "string"}, "code": {"type": "string"}},
           "required": ["detail"]}
_FIELD_ERRORS = {
    "type": "object", "additionalProperties": True,
    "description": "Each bad field names a list of messages (`{\"intended_use\": [\"...\"]}`); a request that cannot "
                   "be parsed gets `{\"detail\": \"...\"}`.",
}
ERROR_RESPONSES = {
    400: OpenApiResponse(_FIELD_ERRORS, description="Bad input: the messages say what to change."),
    401: OpenApiResponse(_DETAIL, description="No credentials, or an unknown, expired or revoked token."),
    403: OpenApiResponse(_DETAIL, description="Not allowed: the detail says why (e-mail not verified, token scope, "
                                              "two-factor authentication, not a reviewer, no grant)."),
    404: OpenApiResponse(_DETAIL, description="No such object among yours."),
    409: OpenApiResponse(_DETAIL, description="Not possible in the object's current state (e.g. already decided)."),
}


def error_responses(*codes: int) -> dict:
    """``extend_schema(responses={200: ..., **error_responses(400, 409)})`` for the answers a view adds."""
    return {code: ERROR_RESPONSES[code] for code in codes}


class GatehouseAutoSchema(AutoSchema):
    """Adds what holds for every operation: 401 and 403 (authentication and permissions run first), 400 for
    any request body (it may not parse), 404 where the path names an object; Django's ``int`` path converter
    matches only digits, so integer path parameters have ``minimum: 0``."""

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        codes = [401, 403]
        if "requestBody" in operation:
            codes.append(400)
        path_parameters = [parameter for parameter in operation.get("parameters", []) if parameter["in"] == "path"]
        if path_parameters:
            codes.append(404)
        for parameter in path_parameters:
            if parameter["schema"].get("type") == "integer":
                parameter["schema"]["minimum"] = 0
        responses = operation["responses"]
        for code in codes:
            if str(code) not in responses:
                responses[str(code)] = self._get_response_for_code(ERROR_RESPONSES[code], str(code))
        operation["responses"] = dict(sorted(responses.items()))
        return operation
