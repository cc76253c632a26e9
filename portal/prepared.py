"""Fixed hot queries as prepared statements on PostgreSQL: planned once per connection, not per call.

The download checks join a dozen tables; PostgreSQL spends longer planning them than running them
(about 3 ms against 0.7 ms on a 2-core machine). A ``PreparedQuery`` is written once with
``%(name)s`` placeholders and runs as it is on SQLite (in its SQLite text where PostgreSQL's uses
LATERAL, which SQLite lacks). On PostgreSQL it is a protocol-level prepared statement: parsed and
planned the first time a connection runs it (prepared statements outlive transactions, not
connections), then only bound and executed, its parameters sent apart from the text and its row
returned in binary (a timestamp's text costs more to format and parse than the rest of a row).
A pooler that shares server connections between clients in transaction mode must keep prepared
statements (PgBouncer 1.21 or later with ``max_prepared_statements``), or use session mode.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import psycopg
from django.db import connection

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
# Django turns psycopg's automatic preparing off (None); with any number instead, the statements of
# this module (which ask) are prepared, and nothing else is: Django's cursors bind on the client.
_PREPARE_ONLY_WHEN_ASKED = 2**31 - 1


@dataclass(frozen=True)
class PreparedQuery:
    sql: str
    parameters: tuple[tuple[str, str], ...]  # (placeholder, PostgreSQL type)
    sqlite_sql: str = ""  # the same rows in SQLite's dialect, where ``sql`` uses what SQLite lacks (LATERAL)

    @functools.cached_property
    def typed_sql(self) -> str:
        """``sql`` with each parameter cast to its declared type: the statement's types do not
        depend on the Python values bound to it (psycopg sends a small int as int2)."""
        types = dict(self.parameters)
        return _PLACEHOLDER.sub(lambda match: f"CAST({match.group(0)} AS {types[match.group(1)]})", self.sql)


class _PreparedBinaryCursor(psycopg.Cursor):
    """psycopg's server-side binding cursor, each query prepared and its rows sent in binary."""

    def execute(self, query, params=None, **kwargs):
        return super().execute(query, params, prepare=True, binary=True)

    def _convert_query(self, query, params=None):
        # psycopg notes the query it sends (``_query``, which Django logs) only when not preparing it.
        self._query = super()._convert_query(query, params)
        return self._query


def fetch_one(query: PreparedQuery, params: dict) -> tuple | None:
    """The query's first row (None when there is none)."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(query.sqlite_sql or query.sql, params)
            return cursor.fetchone()
    connection.close_if_health_check_failed()  # as Django opens its own cursors
    connection.ensure_connection()
    connection.validate_thread_sharing()
    server = connection.connection
    if server.prepare_threshold is None:
        server.prepare_threshold = _PREPARE_ONLY_WHEN_ASKED
    with connection.wrap_database_errors:
        raw = _PreparedBinaryCursor(server)
    # Django's wrapper: its errors, and the query logged where queries are (tests count them).
    with (connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw)) as cursor:
        cursor.execute(query.typed_sql, params)
        return cursor.fetchone()
