# One image for every service; docker-compose.yml picks the process with `oee <name>`.
# Kafka and PostgreSQL run in their own containers (docker-images/), so no JDK, Maven or
# embedded PostgreSQL here. docker-images/build.sh makes the base image and fills
# build/wheels, from which everything installs without a network.
FROM oee-base:bookworm AS python
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv

# The dependencies, pinned and hash-checked, from nothing but the lock: editing the
# code does not reinstall them.
FROM python AS dependencies
COPY build/wheels /wheels
COPY requirements-image.lock /tmp/
RUN pip install --no-index --find-links /wheels --require-hashes -r /tmp/requirements-image.lock

# The project's own wheel.
FROM python AS project
COPY build/wheels /wheels
WORKDIR /src
COPY pyproject.toml README.md ./
COPY events ./events
COPY domain ./domain
COPY adapters ./adapters
COPY projections ./projections
COPY services ./services
COPY cli ./cli
RUN pip wheel --no-index --find-links /wheels --no-deps -w /dist .

FROM python
# A layer of its own, unchanged while the lock is.
COPY --from=dependencies /opt/venv /opt/venv
COPY --from=project /dist /tmp/dist
RUN pip install --no-index --no-deps /tmp/dist/*.whl && rm -rf /tmp/dist

# Run unprivileged; the only writable place is the data dir (e.g. the engine's local state).
ENV OEE_DATA_DIR=/var/lib/oee
RUN mkdir -p /var/lib/oee && chown nobody /var/lib/oee
WORKDIR /var/lib/oee
USER nobody
CMD ["oee", "--help"]
