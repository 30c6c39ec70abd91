# One image for every service; docker-compose.yml picks the process with `oee <name>`.
# Kafka (Redpanda) and PostgreSQL run in their own containers, so no JDK or Maven here.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so editing source code does not reinstall them.
COPY pyproject.toml README.md ./
COPY events ./events
COPY cli ./cli
COPY services ./services
COPY domain ./domain
COPY adapters ./adapters
COPY projections ./projections
RUN pip install .

# Run unprivileged; the only writable place is the data dir (e.g. the engine's local state).
ENV OEE_DATA_DIR=/var/lib/oee
RUN mkdir -p /var/lib/oee && chown nobody /var/lib/oee
WORKDIR /var/lib/oee
USER nobody
CMD ["oee", "--help"]
