"""Typed configuration for every process, read from ``OEE_*`` environment variables."""

from __future__ import annotations

import os
import secrets
import socket
import time
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]

# An instance id (OEE_ENGINE_INSTANCE, …) of this value becomes the host's name. The
# replicas of `docker compose up --scale` (or deploy.replicas) share one environment,
# and a container's hostname is the only thing that tells them apart; static group
# member ids must differ, or each replica fences the other out of its group.
HOSTNAME_INSTANCE = "hostname"


def derive_instance(value: str) -> str:
    """Return ``value`` as an instance id: the host's name for ``hostname``, else itself."""
    return socket.gethostname() if value == HOSTNAME_INSTANCE else value


# The development API key `oee up` makes (when OEE_DEV_API_KEY is unset) is this secret.
DEV_KEY_SECRET = "dev-api-key"


def secret_path(data_dir: Path, name: str) -> Path:
    """Return where the secret ``name`` of ``data_dir`` is kept."""
    return data_dir / "secrets" / name


def stored_secret(data_dir: Path, name: str) -> str:
    """Return the secret ``name`` kept in ``data_dir``, creating it (mode 0600) if absent.

    Created exclusively, so processes starting together agree on one value.
    """
    path = secret_path(data_dir, name)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(32))
    for _ in range(50):  # another process may have created it and not written it yet
        value = path.read_text().strip()
        if value:
            return value
        time.sleep(0.01)
    raise RuntimeError(f"the secret {path} is empty")


class Settings(BaseSettings):
    """All deployable knobs; the defaults run the whole system on this machine."""

    model_config = SettingsConfigDict(env_prefix="OEE_", frozen=True, extra="ignore")

    # Where state of the embedded broker and database lives (survives restarts).
    data_dir: Path = REPO_ROOT / ".oee"

    # Kafka: an external bootstrap address wins; otherwise the embedded broker is used.
    kafka_bootstrap: str | None = None
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    # This process's login to the broker: SASL/SCRAM when a username is set, else none
    # (PLAINTEXT). `oee up` hands each process its own on the embedded broker.
    kafka_username: str | None = None
    kafka_password: str | None = Field(default=None, repr=False)
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"
    partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    # Replicas that must hold a write before an acks=all producer is answered, set on
    # every topic this system creates (the engine's changelog too). Unset: the broker's
    # default. With several brokers, replication factor 3 and this 2 survive one broker.
    min_insync_replicas: int | None = Field(default=None, ge=1)
    commands_topic: str = "orders.commands"
    events_topic: str = "orders.events"
    dead_letter_topic: str = "orders.deadletter"
    # Pool states (price ticks, new pools, liquidity), keyed by pool; compacted.
    market_topic: str = "market.events"
    # API key records (hashes, never keys), keyed by key hash; compacted.
    accounts_topic: str = "accounts.keys"
    # Producers wait this long for more messages to share one produce request: the
    # broker's CPU goes per request far more than per message. (Consumers keep the
    # default fetch: it answers as soon as anything is there, and waits long when idle;
    # a short wait multiplied the idle fetches of every consumer.)
    kafka_linger_ms: int = Field(default=5, ge=0)
    # The most one produce request carries per partition. aiokafka's 16 KiB holds about
    # 25 commands: a burst queued behind full batches, one round trip each.
    kafka_max_batch_bytes: int = Field(default=512 * 1024, ge=1024)
    # Consumers that need no low latency (the projector, the sweeper) ask the broker to
    # answer a fetch once this many bytes are there, or after this long: under load
    # one fetch carries a batch instead of a few records, for every consumer and the
    # broker alike; idle, they ask no more often than this.
    batch_fetch_min_bytes: int = Field(default=256 * 1024, ge=1)
    batch_fetch_max_wait_ms: int = Field(default=200, ge=0)

    # PostgreSQL: an external URL wins; otherwise the embedded server is used. The URL
    # carries this process's login (its own role; `oee up` hands each process its own).
    database_url: str | None = Field(default=None, repr=False)
    database_port: int = 15432

    # Gateway (HTTP + WebSocket).
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 3000
    # Bind the API port with SO_REUSEPORT, so several gateway processes serve it and the
    # kernel spreads the connections among them (`oee up --scale gateway=N` sets it).
    # Off by default: a second system started on a taken port must fail, not share it.
    gateway_reuse_port: bool = False
    max_body_bytes: int = Field(default=16 * 1024, ge=256)
    # How long a WebSocket for a not-yet-seen order waits for its first message.
    unknown_order_grace_s: float = Field(default=2.0, ge=0)
    # How long POST /cancel waits for the outcome on the log before answering 202.
    cancel_timeout_s: float = Field(default=10.0, gt=0)
    # How long an order's WebSocket waits for a missing event before giving up (4503).
    stream_gap_timeout_s: float = Field(default=30.0, gt=0)
    # Events a firehose socket may fall behind before it is dropped (close code 4408).
    stream_buffer: int = Field(default=1000, ge=1)
    # Bytes the kernel and the event loop may each buffer per WebSocket peer: what a
    # peer that stopped reading costs at most, besides its stream_buffer events.
    ws_send_buffer_bytes: int = Field(default=64 * 1024, ge=4096)
    # WebSockets open at once, in all and per client address; more are closed with 4429.
    ws_max_sockets: int = Field(default=2048, ge=1)
    ws_max_sockets_per_client: int = Field(default=256, ge=1)
    # Compress WebSocket messages (permessage-deflate) when a client asks. Off: it costs
    # a compression per message and socket, which is what the firehose's fan-out spends
    # most of its time on with many sockets, and a compressor's memory per socket.
    ws_compression: bool = False
    # WebSocket heartbeats: a ping every interval; no pong within the timeout closes (1011).
    ws_ping_interval_s: float = Field(default=20.0, gt=0)
    ws_ping_timeout_s: float = Field(default=20.0, gt=0)
    # Orders whose recent events the gateway keeps in memory (ended ones are dropped
    # first), and idempotency keys it remembers without asking the database.
    gateway_recent_orders: int = Field(default=2000, ge=1)
    gateway_idempotency_keys: int = Field(default=10_000, ge=1)
    # How long a client may take to send a request's headers, and again its body.
    http_read_timeout_s: float = Field(default=10.0, gt=0)
    # An idle kept-alive connection is closed after this. Longer than the idle expiry
    # of common clients (5 s in httpx and aiohttp's pools' defaults are shorter still),
    # so the client, not the server, ends it: a server closing a connection just as
    # the client reuses it fails that request without an answer.
    http_keep_alive_s: int = Field(default=30, gt=0)
    # Submissions a gateway works on at once; more wait their turn, in order of arrival.
    # A burst handled all at once shares the event loop so thinly that acknowledgements
    # already on their way outwait the produce timeout below.
    gateway_submissions_at_once: int = Field(default=64, ge=1)
    # How long a submission may wait for its turn before it is refused (503 GATEWAY_BUSY).
    gateway_submission_wait_s: float = Field(default=10.0, gt=0)
    # How long writing a command to the log may take before the POST answers 503.
    produce_timeout_s: float = Field(default=5.0, gt=0)
    # How long a read waits for a database connection, and again for its answer, before 503.
    database_timeout_s: float = Field(default=2.0, gt=0)

    # Engine (faust worker).
    engine_id: str = "oee-engine"
    engine_concurrency: int = Field(default=256, ge=1)
    # Commands handled at once (each waits for its events' acks before the next).
    engine_command_concurrency: int = Field(default=32, ge=1)
    # This engine's static member id within its group: a restarted engine with the
    # same id takes its partitions back at once, without waiting for a rebalance.
    engine_instance: str = "0"
    # How long an ended order stays in the engine's table (its duplicates can only
    # come from the uncommitted end of the log, seconds old).
    engine_retention_s: float = Field(default=600.0, gt=0)
    # A command naming an order version the engine has not folded is kept this long.
    engine_deferred_timeout_s: float = Field(default=60.0, gt=0)
    broker_session_timeout_s: float = Field(default=10.0, gt=0)

    # Retries of failed swap attempts: attempts in total, then base·factor^(n-1) apart.
    retry_max_attempts: int = Field(default=3, ge=1)
    retry_base_s: float = Field(default=0.5, ge=0)
    retry_factor: float = Field(default=2.0, ge=1)

    # Sweeper: a submission not accepted after this long is submitted again, an order
    # without a new event for this long (not armed, not waiting to retry) is resumed;
    # each at most this many times. It reads the log from this far back at start-up.
    sweep_submit_after_s: float = Field(default=30.0, gt=0)
    sweep_stall_after_s: float = Field(default=60.0, gt=0)
    sweep_max_attempts: int = Field(default=3, ge=1)
    sweep_lookback_s: float = Field(default=900.0, gt=0)

    # Projector.
    projector_group: str = "oee-projector"
    # This projector's static member id within its group: a restarted projector takes
    # its partitions back at once instead of waiting for the dead member's session.
    projector_instance: str = "0"

    # Trigger service: the consumer group whose partitions say which armed orders each
    # replica evaluates, fires and expires, and this replica's static member id in it.
    triggers_group: str = "oee-triggers"
    triggers_instance: str = "0"

    # This process's index among the replicas of its service (`oee up --scale`), 0 for
    # the first: its operations port is its service's plus 10 times this.
    replica: int = Field(default=0, ge=0)

    # Operations: each service but the gateway serves /metrics, /health/live and
    # /health/ready on a loopback port of its own (the gateway on its API port).
    # A process is ready only while its consumers are at most this many messages behind.
    ops_host: str = "127.0.0.1"
    engine_ops_port: int = 3201
    projector_ops_port: int = 3202
    triggers_ops_port: int = 3203
    market_ops_port: int = 3204
    sweeper_ops_port: int = 3205
    ready_max_lag: int = Field(default=1000, ge=0)
    # Log lines as JSON objects (one per line), or as text for a human at a terminal.
    # Unset: JSON from the services, text from the commands run by hand.
    log_format: Literal["json", "text"] | None = None
    # The gateway logs one line per HTTP request.
    access_log: bool = True

    # Venues (simulated DEX service).
    venues_host: str = "127.0.0.1"
    venues_port: int = 3100
    venue_seed: int = 7
    venue_profile: Literal["realistic", "instant"] = "realistic"
    venue_timeout_s: float = Field(default=5.0, gt=0)
    venue_base_price_sol_usdc: Decimal = Decimal("150")
    # Pool depth is the USD value locked per pool. Raydium's constant-product pools
    # spread theirs over every price, Meteora's bins concentrate theirs near the
    # price, so Meteora (lower fee) wins small orders and the deeper Raydium large
    # ones: the two cross near 60 SOL for SOL/USDC with these defaults.
    venue_raydium_fee_bps: int = Field(default=25, ge=0, lt=10_000)
    venue_raydium_depth_usd: Decimal = Field(default=Decimal(20_000_000), gt=0)
    venue_meteora_base_fee_bps: int = Field(default=10, ge=0, lt=10_000)
    venue_meteora_bin_step_bps: int = Field(default=10, gt=0)
    venue_meteora_bins_per_side: int = Field(default=100, ge=1)
    venue_meteora_depth_usd: Decimal = Field(default=Decimal(400_000), gt=0)
    # Largest step (bps) of the random walk each pool takes per quote and per landing.
    venue_walk_bps: Decimal = Field(default=Decimal(2), ge=0)
    # Probability that a quote or submission fails with a transient error.
    venue_failure_rate: float = Field(default=0.0, ge=0.0, le=1.0)

    # Market service: how often it reads the venues' pools, and the simulated activity
    # of other traders (a random price step per pool every drift interval; 0 = none).
    market_poll_s: float = Field(default=0.25, gt=0)
    market_drift_bps: Decimal = Field(default=Decimal(5), ge=0)
    market_drift_every_s: float = Field(default=1.0, gt=0)
    # A new token launches this often (0 = only on demand, POST /api/simulate/launch).
    market_launch_every_s: float = Field(default=120.0, ge=0)
    # The market topic has one writer: the market service that the group on it assigns
    # partition 0 leads, the others wait (`oee up --scale market=2`); its member id.
    market_group: str = "oee-market"
    market_instance: str = "0"
    launch_liquidity_usd: Decimal = Field(default=Decimal(50_000), gt=0)

    @field_validator(
        "engine_instance", "projector_instance", "triggers_instance", "market_instance"
    )
    @classmethod
    def _derive_instance(cls, value: str) -> str:
        return derive_instance(value)

    # Triggers of limit and sniper orders.
    # A sniper fires only on a pool holding at least this much liquidity.
    sniper_min_liquidity_usd: Decimal = Field(default=Decimal(10_000), ge=0)
    # Triggered orders executing at once; more wait their turn, so that a burst of
    # triggers cannot crowd out market orders. On 2 cores 32 both drained a burst
    # twice as fast as 200 and kept market orders near their idle latency
    # (`oee bench triggers`, README).
    trigger_max_in_flight: int = Field(default=32, ge=1)

    # Accounts and API keys (README, "Keys, roles and rate limits").
    # A key accepted as an admin of the account "dev" without being on the accounts
    # topic: for development and the tests. Unset, only created keys work.
    dev_api_key: str | None = None
    # What the venue simulator's controls (faults, price moves, launches) require as
    # a bearer token, and the secret mixed into idempotent order ids. Unset, each is
    # generated once into the data dir, which every process on this machine shares.
    venues_admin_token: str | None = None
    order_id_secret: str | None = None
    # Requests per account: a burst of this many, refilled at this rate a second.
    rate_limit_per_s: float = Field(default=1000.0, gt=0)
    rate_limit_burst: int = Field(default=5000, ge=1)

    def admin_token(self) -> str:
        """Return the venue simulator's admin token (generated into the data dir if unset)."""
        return self.venues_admin_token or stored_secret(self.data_dir, "venues-admin-token")

    def order_secret(self) -> str:
        """Return the secret of idempotent order ids (generated into the data dir if unset)."""
        return self.order_id_secret or stored_secret(self.data_dir, "order-id-secret")

    def as_env(self) -> dict[str, str]:
        """Return the ``OEE_*`` environment variables that recreate these settings."""
        return {
            f"OEE_{name.upper()}": str(value)
            for name, value in self.model_dump(mode="json").items()
            if value is not None
        }

    @property
    def gateway_url(self) -> str:
        """Return where a client on this machine reaches the gateway (a wildcard bind
        address is reachable on loopback)."""
        wildcard = self.gateway_host in ("0.0.0.0", "::")
        return f"http://{'127.0.0.1' if wildcard else self.gateway_host}:{self.gateway_port}"

    @property
    def venues_url(self) -> str:
        return f"http://{self.venues_host}:{self.venues_port}"

    @property
    def bootstrap(self) -> str:
        """Return the Kafka bootstrap address in use (external or embedded)."""
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment."""
    return Settings()
