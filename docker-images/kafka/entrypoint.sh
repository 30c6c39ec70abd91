#!/bin/bash
# Writes the broker's configuration, formats storage on first start, then runs Kafka.
# The same settings as adapters/embedded/kafka.py, but PLAINTEXT without logins
# (docker-compose.yml runs the services without them), listening on all interfaces.
set -euo pipefail

DATA=/var/lib/kafka/data
CONFIG=/tmp/server.properties
JAVA=(java "-Xmx${KAFKA_HEAP}" -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
    -Dlog4j2.configurationFile=/opt/kafka/log4j2.properties -cp "/opt/kafka/libs/*")

cat > "$CONFIG" <<PROPERTIES
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9093
listeners=PLAINTEXT://0.0.0.0:9092,CONTROLLER://127.0.0.1:9093
advertised.listeners=PLAINTEXT://${KAFKA_ADVERTISED_HOST}:9092
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
log.cleaner.dedupe.buffer.size=8388608
PROPERTIES

if [[ ! -f "$DATA/meta.properties" ]]; then
    cluster_id="$("${JAVA[@]}" kafka.tools.StorageTool random-uuid)"
    "${JAVA[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$CONFIG"
fi

# The healthcheck reads this file for the broker's "started" line: start it empty, so a
# line from the previous run of this container does not count.
rm -f /tmp/kafka-server.log
exec "${JAVA[@]}" kafka.Kafka "$CONFIG"
