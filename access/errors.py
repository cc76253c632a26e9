"""Errors raised by access services; views and APIs turn them into 400/403/409 answers."""


class AccessError(Exception):
    """A rule of the access process refused the action; the message says why, for the user."""


class TransitionError(AccessError):
    """The application is not in a state that allows this action."""
