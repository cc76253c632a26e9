"""OpenAPI description of the Bearer token authentication."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "access.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "A personal API token created at /access/tokens/: `Authorization: Bearer <token>`. "
                               "Its scopes limit it: `download` (manifests, download scripts), `inference` "
                               "(the playground), `review` (the review endpoints)."}
