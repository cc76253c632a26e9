"""Prepared hot queries: planned once per server connection, the same rows as the plain query."""

import datetime

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from portal.prepared import PreparedQuery, fetch_one
from tests.factories import UserFactory

USERS_NAMED = PreparedQuery(
    sql="SELECT COUNT(*), MAX(%(label)s), MAX(date_joined) FROM access_user WHERE email = %(email)s OR id = %(id)s",
    parameters=(("label", "text"), ("email", "text"), ("id", "bigint")),
)


def test_each_parameter_is_cast_to_its_declared_type():
    assert USERS_NAMED.typed_sql == (
        "SELECT COUNT(*), MAX(CAST(%(label)s AS text)), MAX(date_joined) FROM access_user "
        "WHERE email = CAST(%(email)s AS text) OR id = CAST(%(id)s AS bigint)"
    )


@pytest.mark.django_db
def test_a_query_answers_as_its_plain_sql_does():
    user = UserFactory(email="ada@example.org")
    params = {"label": "found", "email": "ada@example.org", "id": -1}
    with connection.cursor() as cursor:
        cursor.execute(USERS_NAMED.sql, params)
        plain = cursor.fetchone()
    assert fetch_one(USERS_NAMED, params) == plain
    assert plain[:2] == (1, "found")
    if connection.vendor == "postgresql":  # times come back aware, in UTC, as the ORM's do (SQLite: text)
        assert plain[2] == user.date_joined and plain[2].utcoffset() == datetime.timedelta(0)
    assert fetch_one(USERS_NAMED, {"label": "id", "email": "nobody@example.org", "id": user.pk})[:2] == (1, "id")
    assert fetch_one(USERS_NAMED, {"label": "x", "email": "nobody@example.org", "id": -1}) == (0, None, None)


def prepared_statements() -> list[tuple]:
    """The protocol-level prepared statements of this connection that run USERS_NAMED."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT from_sql, generic_plans + custom_plans FROM pg_prepared_statements "
                       "WHERE statement LIKE %s", ["%FROM access_user WHERE email = CAST($% AS text)%"])
        return cursor.fetchall()


@pytest.mark.django_db(transaction=True)  # no test transaction around it: the connection can be closed
def test_postgresql_prepares_once_per_connection_and_again_after_a_rollback():
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    connection.close()
    params = {"label": "x", "email": "nobody@example.org", "id": -1}
    with CaptureQueriesContext(connection) as logged:
        fetch_one(USERS_NAMED, params)
    assert [query["sql"] for query in logged.captured_queries] == [  # logged and counted like any query
        USERS_NAMED.typed_sql.replace("%(label)s", "$1").replace("%(email)s", "$2").replace("%(id)s", "$3")]
    assert prepared_statements() == [(False, 1)]
    for _ in range(5):
        assert fetch_one(USERS_NAMED, params) == (0, None, None)
    assert prepared_statements() == [(False, 6)]  # one statement, planned once, run six times
    with transaction.atomic():  # psycopg forgets its statements at a rollback (it may have undone DDL) ...
        sid = transaction.savepoint()
        fetch_one(USERS_NAMED, params)
        transaction.savepoint_rollback(sid)
    for _ in range(2):
        assert fetch_one(USERS_NAMED, params) == (0, None, None)
    assert prepared_statements() == [(False, 2)]  # ... and prepares them once more

    connection.close()  # a new server connection has none until it runs the query
    assert prepared_statements() == []
    assert fetch_one(USERS_NAMED, params) == (0, None, None)
    assert prepared_statements() == [(False, 1)]


@pytest.mark.django_db
def test_other_queries_are_not_prepared():
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    fetch_one(USERS_NAMED, {"label": "x", "email": "nobody@example.org", "id": -1})
    for _ in range(10):  # more than psycopg's usual threshold for preparing a repeated query
        assert not UserFactory._meta.model.objects.filter(email="nobody@example.org").exists()
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        statements = [row[0] for row in cursor.fetchall()]
    assert any("FROM access_user WHERE email = CAST($2 AS text)" in statement for statement in statements)
    assert not any('"access_user"' in statement for statement in statements)
