"""Writes of the access app: the only place with business rules. One module per concern."""
