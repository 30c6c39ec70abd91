"""The OpenAPI document states what the gateway really accepts and answers.

schemathesis checks the answers against it on a running system
(tests/integration/test_api_contract.py); these check the document itself and the
answers that need no broker or database: errors in the envelope, 405 with
``Allow``, 500 and 503 from the catch-all.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from adapters.settings import Settings
from domain.accounts import Caller
from domain.numbers import DECIMAL_PATTERN
from services.gateway import deps, errors
from services.gateway.app import create_app
from services.gateway.auth import authenticate
from services.gateway.routes import orders
from services.gateway.submissions import Submissions
from tests.auth import AUTH, DEV_KEY

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(
        Settings(database_url="postgresql://nobody@127.0.0.1:9/nothing", dev_api_key=DEV_KEY)
    )


@pytest.fixture(scope="module")
def document(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def test_openapi_no_longer_advertises_fastapis_detail_shape(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]

    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas
    assert '"detail"' not in str(document).replace("'", '"')


def test_openapi_every_error_answer_is_the_error_envelope(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        responses = operation["responses"]
        assert "500" in responses, (method, path)
        for status, response in responses.items():
            if int(status) < 400 or path == "/health":
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}, (method, path, status)


def test_openapi_every_success_answer_has_a_model(document: dict[str, Any]) -> None:
    for path, _method, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 300:
                schema = response["content"]["application/json"]["schema"]
                assert schema.get("$ref", "").startswith("#/components/schemas/"), (path, status)


def test_openapi_202_answers_declare_their_location(document: dict[str, Any]) -> None:
    accepted = [
        (path, op["responses"]["202"])
        for path, method, op in operations(document)
        if "202" in op["responses"]
    ]

    assert {path for path, _ in accepted} == {
        "/api/orders/execute",
        "/api/orders/{order_id}/cancel",
    }
    for _, response in accepted:
        assert "Location" in response["headers"]


def test_openapi_503_answers_declare_retry_after(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        response = operation["responses"].get("503")
        if response is not None and path != "/health":
            assert "Retry-After" in response["headers"], (method, path)


def test_openapi_amount_pattern_is_the_one_the_gateway_enforces(
    document: dict[str, Any],
) -> None:
    body = document["paths"]["/api/orders/execute"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    pattern = re.compile(schema["properties"]["amount"]["pattern"])

    assert schema["properties"]["amount"]["pattern"] == DECIMAL_PATTERN
    assert schema["additionalProperties"] is False
    for bad in ("1e-100000", "1E-28", "1_000", "\u0661\u0662", " 1.5 ", "-1"):
        assert pattern.search(bad) is None, bad
    assert pattern.search("1.5")


def test_openapi_describes_both_websockets_and_every_close_code(document: dict[str, Any]) -> None:
    text = document["info"]["description"]

    assert "/api/orders/execute?orderId=" in text
    assert "/api/stream" in text
    for code in ("1000", "1011", "4400", "4404", "4408", "4410", "4429", "4503"):
        assert f"| {code}" in text, code
    assert "`cancelled` or\n`expired`" in text or "`cancelled` or `expired`" in text


async def test_method_not_allowed_answers_405_with_allow_in_the_envelope(
    app: FastAPI, document: dict[str, Any]
) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gateway", headers=AUTH
    ) as client:
        for path, item in document["paths"].items():
            concrete = path.replace("{order_id}", str(uuid.uuid4()))
            for method in METHODS:
                if method in item:
                    continue
                response = await client.request(method.upper(), concrete)

                assert response.status_code == 405, (method, path)
                assert set(response.headers["allow"].split(", ")) >= {m.upper() for m in item}
                assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


class BrokenReadSide:
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def state(self, order_id: uuid.UUID) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("raised", "status", "code"),
    [
        (RuntimeError("a bug"), 500, "INTERNAL_ERROR"),
        (psycopg.OperationalError("connection refused"), 503, "DATABASE_UNAVAILABLE"),
    ],
)
async def test_unexpected_error_and_database_outage_answer_in_the_envelope(
    raised: Exception, status: int, code: str
) -> None:
    app = FastAPI()
    errors.install(app)
    app.include_router(orders.router)
    app.dependency_overrides[deps.read_side] = lambda: BrokenReadSide(raised)
    app.dependency_overrides[deps.submissions] = Submissions
    app.dependency_overrides[deps.tail] = lambda: None  # never reached: the read fails first
    app.dependency_overrides[deps.settings] = Settings
    app.dependency_overrides[authenticate] = lambda: Caller("dev", "admin", "test")
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.get(f"/api/orders/{uuid.uuid4()}")

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert ("retry-after" in response.headers) == (status == 503)


def test_openapi_declares_the_api_key_on_every_keyed_operation(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"]["apiKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    keyed = [
        (path, method, operation)
        for path, method, operation in operations(document)
        if "401" in operation["responses"]
    ]
    assert len(keyed) >= 8
    for path, method, operation in keyed:
        assert operation.get("security") == [{"apiKey": []}], (method, path)
    for path, method, operation in operations(document):
        if "401" not in operation["responses"]:
            assert "security" not in operation, (method, path)
