"""The API against the whole running system, with generated input.

Two properties, on the real gateway, engine, projector, broker and PostgreSQL:

* whatever body a client sends to ``POST /api/orders/execute``, the gateway never
  answers 5xx, and every order it accepts is stored by every later consumer: the
  engine accepts it and the projector writes it to PostgreSQL, as it was asked
  (hypothesis, over the request schema and well beyond it);
* every documented operation answers as the OpenAPI document says, with no 5xx
  (schemathesis, positive and negative cases from the document itself, a capped
  number per operation so that the module finishes in a couple of minutes).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.auth import AUTH
from tests.integration.system import System

SOL_MINT = "So11111111111111111111111111111111111111112"
# Inputs that once got through or crashed, among the generated ones.
HOSTILE_TEXT = [
    "0.0000000000000000000000000000",
    "1e-100000",
    "1E-28",
    "1_000",
    "\u0661\u0662",
    " 1.5 ",
    "a\x00b",
    "\ud800",
    "",
    "NaN",
    "-1",
]


def decimal_text() -> st.SearchStrategy[Any]:
    plain = st.decimals(
        min_value=Decimal("0.000001"), max_value=Decimal(100), places=6, allow_nan=False
    ).map(lambda d: format(d, "f"))
    return st.one_of(
        plain,
        plain,
        st.sampled_from(HOSTILE_TEXT),
        st.text(max_size=12),
        st.integers(min_value=-(10**20), max_value=10**20),
        st.floats(),
        st.none(),
    )


def token() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(["SOL", "USDC", "USDT", "sol", "usdc", "BONK", "PEPE", SOL_MINT]),
        st.sampled_from(HOSTILE_TEXT),
        st.text(max_size=12),
        st.integers(),
    )


def expiry() -> st.SearchStrategy[Any]:
    now = datetime.now(UTC)
    return st.one_of(
        st.datetimes(
            min_value=(now - timedelta(days=1)).replace(tzinfo=None),
            max_value=(now + timedelta(days=500)).replace(tzinfo=None),
            timezones=st.just(UTC),
        ).map(datetime.isoformat),
        st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "soon"]),
        st.integers(),
    )


PAIRS = [("SOL", "USDC"), ("usdc", "sol"), ("USDT", "SOL"), (SOL_MINT, "USDC"), ("SOL", "BONK")]


@st.composite
def valid_order(draw: st.DrawFn) -> dict[str, Any]:
    """Return an order the gateway should accept: a market, limit or sniper order."""
    token_in, token_out = draw(st.sampled_from(PAIRS))
    amount = draw(st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(50), places=6))
    body: dict[str, Any] = {
        "type": draw(st.sampled_from(["market", "limit", "sniper"])),
        "tokenIn": token_in,
        "tokenOut": token_out,
        "amount": format(amount.normalize(), "f"),
        "slippageBps": draw(st.integers(1, 5000)),
    }
    if draw(st.booleans()):
        body["clientOrderId"] = draw(st.from_regex(r"[ -~]{1,64}", fullmatch=True))
    if body["type"] == "limit":
        body["limitPrice"] = draw(st.sampled_from(["0.000000000000000001", "1", "150.5", "999999"]))
    if body["type"] == "sniper":
        body["tokenOut"] = draw(st.from_regex(r"[A-Z][A-Z0-9]{1,9}", fullmatch=True))
        body["tokenIn"] = "SOL"
        if draw(st.booleans()):
            body["maxPrice"] = draw(st.sampled_from(["0.001", "1", "0.000000001"]))
    if body["type"] != "market" and draw(st.booleans()):
        ahead = draw(st.integers(60, 300 * 86400))
        body["expiresAt"] = (datetime.now(UTC) + timedelta(seconds=ahead)).isoformat()
    return body


@st.composite
def spoiled_order(draw: st.DrawFn) -> dict[str, Any]:
    """Return a valid order with one field replaced by something generated or hostile."""
    body = draw(valid_order())
    field = draw(st.sampled_from([*body, "clientOrderId", "limitPrice", "colour"]))
    body[field] = draw(
        st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=20), decimal_text())
    )
    return body


def order_body() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(valid_order(), spoiled_order(), wild_order())


def wild_order() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "type": st.one_of(
                st.sampled_from(["market", "market", "limit", "sniper"]), st.text(max_size=8)
            ),
            "tokenIn": token(),
            "tokenOut": token(),
            "amount": decimal_text(),
        },
        optional={
            "slippageBps": st.one_of(st.integers(-10, 6000), st.booleans(), st.text(max_size=4)),
            "clientOrderId": st.one_of(
                st.text(max_size=70), st.sampled_from(HOSTILE_TEXT), st.integers()
            ),
            "limitPrice": decimal_text(),
            "maxPrice": decimal_text(),
            "expiresAt": expiry(),
            "colour": st.text(max_size=4),
        },
    )


def idempotency_key() -> st.SearchStrategy[str | None]:
    # HTTP trims a header value's outer spaces, and a client refuses to send them.
    return st.one_of(st.none(), st.from_regex(r"[!-~]([ -~]{0,88}[!-~])?", fullmatch=True))


@pytest.fixture(scope="module")
def accepted(system: System) -> dict[str, dict[str, Any]]:
    """Run the generated submissions once; return what was accepted, by order id."""
    kept: dict[str, dict[str, Any]] = {}
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=system.base_url, timeout=30, headers=AUTH) as client:

        @settings(
            max_examples=300,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(body=order_body(), key=idempotency_key())
        def submit(body: dict[str, Any], key: str | None) -> None:
            headers = {"content-type": "application/json"}
            if key is not None:
                # A fresh key each time: a repeat of a key is another test's subject.
                headers["Idempotency-Key"] = f"{key}-{uuid.uuid4()}"
            raw = json.dumps(body).encode()
            response = client.post("/api/orders/execute", content=raw, headers=headers)
            statuses[response.status_code] += 1
            assert response.status_code < 500, (body, response.text)
            if response.status_code == 202:
                order_id = response.json()["orderId"]
                assert response.headers["location"] == f"/api/orders/{order_id}"
                kept[order_id] = body
            else:
                assert response.status_code in (400, 409, 413, 422), response.text
                error = response.json()["error"]
                assert error["code"], response.text
                assert error["message"], response.text

        submit()
    print(f"\ngenerated submissions by answer: {dict(sorted(statuses.items()))}")
    return kept


def stored_orders(database_url: str, order_ids: list[str]) -> dict[str, dict[str, Any]]:
    with psycopg.connect(database_url) as conn:
        cursor = conn.execute(
            "select order_id, order_type, token_in, amount, client_order_id, limit_price,"
            " max_price from orders where order_id = any(%s)",
            ([uuid.UUID(order_id) for order_id in order_ids],),
        )
        columns = [column.name for column in cursor.description or ()]
        return {str(row[0]): dict(zip(columns, row, strict=True)) for row in cursor.fetchall()}


def test_generated_submissions_never_answer_5xx_and_every_accepted_order_is_stored(
    system: System, accepted: dict[str, dict[str, Any]]
) -> None:
    # Not vacuous: enough generated orders were valid to reach the projector.
    assert len(accepted) >= 10, f"only {len(accepted)} accepted"
    deadline = time.monotonic() + 90
    stored = stored_orders(system.settings.database_url or "", list(accepted))
    while len(stored) < len(accepted) and time.monotonic() < deadline:
        time.sleep(0.5)
        stored = stored_orders(system.settings.database_url or "", list(accepted))

    missing = {order_id: accepted[order_id] for order_id in set(accepted) - set(stored)}
    assert not missing, f"accepted but never stored: {missing}"
    for order_id, body in accepted.items():
        row = stored[order_id]
        assert row["amount"] == Decimal(body["amount"])
        assert row["client_order_id"] == body.get("clientOrderId")
        for field, column in (("limitPrice", "limit_price"), ("maxPrice", "max_price")):
            if body.get(field) is not None:
                assert row[column] == Decimal(body[field])


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# Cases per operation and mode (12 operations, positive and negative): about 1,800 in all.
EXAMPLES = 100


def exercise(
    operation: Any, mode: GenerationMode, cases: Counter[str], answers: Counter[int]
) -> None:
    """Call ``operation`` with ``EXAMPLES`` generated cases of ``mode`` and check each answer."""

    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: Any) -> None:
        cases[f"{case.method} {case.path} {mode.value}"] += 1
        answer = case.call_and_validate(checks=CHECKS, timeout=30, headers=AUTH)
        answers[answer.status_code] += 1

    call()


def has_input(definition: dict[str, Any]) -> bool:
    """Tell whether an operation takes parameters or a body: something to get wrong."""
    return bool(definition.get("parameters") or definition.get("requestBody"))


def test_every_operation_answers_as_its_openapi_document_says(system: System) -> None:
    schema = schemathesis.openapi.from_url(f"{system.base_url}/openapi.json")
    # Every case carries a valid key (``AUTH``): the declared security scheme is not a
    # parameter to generate or break (tests/integration/test_accounts.py covers 401s).
    schema.config.generation.update(with_security_parameters=False)
    cases: Counter[str] = Counter()
    answers: Counter[int] = Counter()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        exercise(operation, GenerationMode.POSITIVE, cases, answers)
        if has_input(operation.definition.raw):
            exercise(operation, GenerationMode.NEGATIVE, cases, answers)
    print(f"\nschemathesis cases: {sum(cases.values())}: {dict(sorted(cases.items()))}")
    print(f"schemathesis answers by status: {dict(sorted(answers.items()))}")
    operations = {
        f"{method.upper()} {path}"
        for path, item in schema.raw_schema["paths"].items()
        for method in item
    }
    assert {name.rsplit(" ", 1)[0] for name in cases} == operations
