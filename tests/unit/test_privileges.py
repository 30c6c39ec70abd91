"""Who may do what: the ACL table, the passwords file and the logins handed to processes."""

from __future__ import annotations

import stat
from pathlib import Path

from adapters.credentials import (
    PRINCIPALS,
    SERVICE_PRINCIPALS,
    Credentials,
    login_as,
    login_env,
    with_login,
)
from adapters.embedded.kafka import KafkaBroker
from adapters.kafka_acls import Acl, Operation, Resource, acl_table
from adapters.settings import Settings

SETTINGS = Settings(kafka_bootstrap="127.0.0.1:1", database_url="postgresql://h:5/oee")


def writers(topic: str) -> set[str]:
    return {
        acl.principal
        for acl in acl_table(SETTINGS)
        if acl.resource is Resource.TOPIC
        and topic.startswith(acl.prefix)
        and acl.operation in (Operation.WRITE, Operation.ALL)
    }


def test_acl_table_events_topic_is_written_by_the_engine_alone() -> None:
    assert writers(SETTINGS.events_topic) == {"engine"}
    assert writers(f"{SETTINGS.events_topic}.a1b2c3") == {"engine"}


def test_acl_table_market_topic_is_written_by_the_market_service_alone() -> None:
    assert writers(SETTINGS.market_topic) == {"market"}


def test_acl_table_commands_are_written_by_gateway_triggers_and_sweeper() -> None:
    assert writers(SETTINGS.commands_topic) == {"gateway", "triggers", "sweeper"}


def test_acl_table_gives_the_admin_no_row_and_nobody_a_wildcard() -> None:
    table = acl_table(SETTINGS)

    assert "admin" not in {acl.principal for acl in table}
    assert all(acl.prefix for acl in table)
    # Only the engine owns anything whole: its faust app's topics and group.
    assert {(acl.principal, acl.prefix) for acl in table if acl.operation is Operation.ALL} == {
        ("engine", SETTINGS.engine_id)
    }


def test_acl_table_follows_configured_names() -> None:
    renamed = SETTINGS.model_copy(update={"events_topic": "prod.events"})

    assert Acl("engine", Resource.TOPIC, "prod.events", Operation.WRITE) in acl_table(renamed)


def test_credentials_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"

    first = Credentials.load_or_create(path)
    again = Credentials.load_or_create(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first == again
    assert set(first.passwords) == set(PRINCIPALS)
    assert len(set(first.passwords.values())) == len(PRINCIPALS)


def test_login_as_a_service_carries_its_own_password_alone(tmp_path: Path) -> None:
    credentials = Credentials.load_or_create(tmp_path / "credentials.json")

    env = login_env(login_as(SETTINGS, credentials, "gateway"))

    assert env["OEE_KAFKA_USERNAME"] == "gateway"
    assert env["OEE_KAFKA_PASSWORD"] == credentials.password("gateway")
    assert env["OEE_DATABASE_URL"] == (
        f"postgresql://oee_gateway:{credentials.password('gateway')}@h:5/oee"
    )
    others = [credentials.password(p) for p in PRINCIPALS if p != "gateway"]
    assert not any(other in value for other in others for value in env.values())


def test_login_as_no_principal_drops_every_login(tmp_path: Path) -> None:
    credentials = Credentials.load_or_create(tmp_path / "credentials.json")
    admin = login_as(SETTINGS, credentials, "admin")

    venues = login_as(admin, credentials, SERVICE_PRINCIPALS["venues"])

    assert venues.kafka_username is None
    assert venues.kafka_password is None
    assert venues.database_url == "postgresql://h:5/oee"


def test_login_as_leaves_an_external_server_as_configured(tmp_path: Path) -> None:
    credentials = Credentials.load_or_create(tmp_path / "credentials.json")
    configured = SETTINGS.model_copy(
        update={"kafka_username": "mine", "database_url": "postgresql://me:pw@db/x"}
    )

    own = login_as(configured, credentials, "engine", kafka=False, database=False)

    assert own.kafka_username == "mine"
    assert own.database_url == "postgresql://me:pw@db/x"


def test_with_login_quotes_and_replaces_the_user() -> None:
    assert with_login("postgresql://old:x@h:5/db", "new", "p@ss/") == (
        "postgresql://new:p%40ss%2F@h:5/db"
    )
    assert with_login("postgresql://old@h/db", None, None) == "postgresql://h/db"


def test_embedded_broker_listens_with_sasl_and_denies_what_no_acl_allows(tmp_path: Path) -> None:
    properties = KafkaBroker(tmp_path / "kafka").server_properties()

    assert "PLAINTEXT:PLAINTEXT" not in properties
    assert "listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT\n" in (
        properties
    )
    assert "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n" in (
        properties
    )
    assert "allow.everyone.if.no.acl.found=false\n" in properties
    assert "super.users=User:admin\n" in properties
