"""Prepared hot queries: planned once per server connection, the same rows as the plain query."""

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from portal.prepared import PreparedQuery, fetch_one
from tests.factories import UserFactory

USERS_NAMED = PreparedQuery(
    name="gatehouse_test_users_named",
    sql="SELECT COUNT(*), MAX(%(label)s) FROM access_user WHERE email = %(email)s OR id = %(id)s",
    parameters=(("label", "text"), ("email", "text"), ("id", "bigint")),
)


def test_the_statement_numbers_placeholders_in_the_order_of_the_parameters():
    assert USERS_NAMED.prepare_statement() == (
        "PREPARE gatehouse_test_users_named (text, text, bigint) AS "
        "SELECT COUNT(*), MAX($1) FROM access_user WHERE email = $2 OR id = $3"
    )
    assert USERS_NAMED.execute_statement() == "EXECUTE gatehouse_test_users_named (%s, %s, %s)"


@pytest.mark.django_db
def test_a_query_answers_as_its_plain_sql_does():
    user = UserFactory(email="ada@example.org")
    params = {"label": "found", "email": "ada@example.org", "id": -1}
    with connection.cursor() as cursor:
        cursor.execute(USERS_NAMED.sql, params)
        plain = cursor.fetchone()
    assert fetch_one(USERS_NAMED, params) == plain == (1, "found")
    assert fetch_one(USERS_NAMED, {"label": "id", "email": "nobody@example.org", "id": user.pk}) == (1, "id")
    assert fetch_one(USERS_NAMED, {"label": "x", "email": "nobody@example.org", "id": -1}) == (0, None)


@pytest.mark.django_db(transaction=True)  # no test transaction around it: the connection can be closed
def test_postgresql_prepares_once_per_connection_even_across_rollbacks():
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    connection.close()
    params = {"label": "x", "email": "nobody@example.org", "id": -1}
    with CaptureQueriesContext(connection) as first:
        fetch_one(USERS_NAMED, params)
    with transaction.atomic():  # a rolled-back transaction keeps the statement
        sid = transaction.savepoint()
        fetch_one(USERS_NAMED, params)
        transaction.savepoint_rollback(sid)
    with CaptureQueriesContext(connection) as later:
        fetch_one(USERS_NAMED, params)
    assert [query["sql"].split()[0] for query in first.captured_queries] == ["PREPARE", "EXECUTE"]
    assert [query["sql"].split()[0] for query in later.captured_queries] == ["EXECUTE"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements WHERE name = %s", [USERS_NAMED.name])
        assert cursor.fetchall() == [(USERS_NAMED.name,)]

    connection.close()  # a new server connection has none: it prepares again
    with CaptureQueriesContext(connection) as reconnected:
        assert fetch_one(USERS_NAMED, params) == (0, None)
    assert [query["sql"].split()[0] for query in reconnected.captured_queries] == ["PREPARE", "EXECUTE"]
