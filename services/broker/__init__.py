"""The embedded Apache Kafka broker used when no external bootstrap address is configured."""

from services.broker.kafka import KAFKA_VERSION, BrokerError, KafkaBroker, resolve_kafka_libs

__all__ = ["KAFKA_VERSION", "BrokerError", "KafkaBroker", "resolve_kafka_libs"]
