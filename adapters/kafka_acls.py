"""Who may do what on the log: the ACLs of every service principal, and creating them.

The broker denies whatever no ACL allows (``adapters.embedded.kafka`` turns its
authorizer on), so this table is the whole of what each process may do. Resources
are PREFIXED patterns of the configured names: ``orders.events`` also covers the
suffixed topics of the test suite (``orders.events.<suffix>``), ``oee-engine`` the
engine's faust topics and groups (``oee-engine-orders-changelog``). The admin is a
super user and needs no row. ``oee up`` applies the table to the embedded broker;
on an external cluster create the same ACLs yourself (README, "Least privilege").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.admin import CreateAclsRequest_v1
from aiokafka.protocol.api import Request

from adapters.kafka import client_options, topic_names
from adapters.settings import Settings


class Resource(IntEnum):
    """Kafka's resource types (org.apache.kafka.common.resource.ResourceType)."""

    TOPIC = 2
    GROUP = 3


class Operation(IntEnum):
    """Kafka's ACL operations (org.apache.kafka.common.acl.AclOperation)."""

    ALL = 2
    READ = 3
    WRITE = 4
    DESCRIBE = 8


_PREFIXED = 4  # PatternType.PREFIXED
_ALLOW = 3  # AclPermissionType.ALLOW


@dataclass(frozen=True)
class Acl:
    """Allow ``principal`` to ``operation`` every ``resource`` whose name starts with ``prefix``."""

    principal: str
    resource: Resource
    prefix: str
    operation: Operation


def acl_table(settings: Settings) -> list[Acl]:
    """Return every ACL of the system's principals (the admin, a super user, needs none)."""
    s = settings
    topic, group = Resource.TOPIC, Resource.GROUP
    read, write, describe = Operation.READ, Operation.WRITE, Operation.DESCRIBE
    # Who writes and who reads each topic; WRITE and READ imply DESCRIBE.
    writes = {
        "gateway": [s.commands_topic],
        "triggers": [s.commands_topic],
        "sweeper": [s.commands_topic],
        # Only the engine writes order events (and dead letters of commands it cannot use).
        "engine": [s.events_topic, s.dead_letter_topic],
        "market": [s.market_topic],
        # Events the read models cannot store are set aside, not lost.
        "projector": [s.dead_letter_topic],
    }
    reads = {
        # The gateway tails commands (idempotency) and events (streams, firehose).
        # The API keys' topic (written by `oee keys` as the admin) is the gateway's alone.
        # It reads the market topic for the web page (prices, pools, launches).
        "gateway": [s.commands_topic, s.events_topic, s.accounts_topic, s.market_topic],
        "triggers": [s.events_topic, s.market_topic],
        "sweeper": [s.commands_topic, s.events_topic],
        "engine": [s.commands_topic, s.events_topic],
        # The market service rebuilds what it published last from its own topic.
        "market": [s.market_topic],
        "projector": [s.events_topic],
    }
    table: list[Acl] = []
    for principal in writes.keys() | reads.keys():
        table += [Acl(principal, topic, name, write) for name in writes.get(principal, [])]
        table += [Acl(principal, topic, name, read) for name in reads.get(principal, [])]
        # Every service checks at start that all the system's topics exist.
        table += [Acl(principal, topic, name, describe) for name in topic_names(s)]
    # The engine owns its faust app: its consumer group, its table's changelog topic
    # (created by faust) and faust's own; the projector its group (one for every projection).
    table += [
        Acl("engine", topic, s.engine_id, Operation.ALL),
        Acl("engine", group, s.engine_id, Operation.ALL),
        Acl("projector", group, s.projector_group, read),
        Acl("projector", group, s.projector_group, describe),
        # The trigger services' group says which partitions each one acts on.
        Acl("triggers", group, s.triggers_group, read),
        Acl("triggers", group, s.triggers_group, describe),
        # The market services' group says which one leads (publishes).
        Acl("market", group, s.market_group, read),
        Acl("market", group, s.market_group, describe),
    ]
    return sorted(set(table), key=lambda acl: (acl.principal, acl.resource, acl.prefix))


class _CreateAcls(Request[CreateAclsRequest_v1]):
    """CreateAcls with many creations in one request (aiokafka's builder takes one)."""

    API_KEY = 30

    def __init__(self, creations: list[tuple[Any, ...]]) -> None:
        self._creations = creations

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(self._creations)


async def ensure_acls(settings: Settings) -> None:
    """Create every ACL of ``acl_table`` (idempotent: the broker keeps one of each).

    ``settings`` must log in as a super user.
    """
    creations = [
        (acl.resource, acl.prefix, _PREFIXED, f"User:{acl.principal}", "*", acl.operation, _ALLOW)
        for acl in acl_table(settings)
    ]
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        response = await admin._client.send(admin._client.get_random_node(), _CreateAcls(creations))
    finally:
        await admin.close()
    for code, message in response.creation_responses:
        if code:
            raise for_code(code)(f"could not create an ACL: {message}")
