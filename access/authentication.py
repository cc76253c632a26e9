"""DRF authentication with personal API tokens: ``Authorization: Bearer <token>``."""

from rest_framework import authentication, exceptions

from access.services.tokens import (
    AUTHORIZATION_SCHEME, ApiTokenInvalid, api_token_authenticate, api_token_from_header,
)


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = AUTHORIZATION_SCHEME

    def authenticate(self, request):
        value = request.META.get("HTTP_AUTHORIZATION", "")
        words = value.split()
        if not words or words[0].lower() != self.keyword.lower():
            return None  # no token offered: session authentication may apply
        try:
            token = api_token_authenticate(raw=api_token_from_header(value))
        except ApiTokenInvalid as error:
            raise exceptions.AuthenticationFailed(str(error)) from None
        return token.user, token

    def authenticate_header(self, request) -> str:
        return self.keyword
