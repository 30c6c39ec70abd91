"""The embedded infrastructure used when no external one is configured: a real Apache
Kafka broker (``kafka``) and a PostgreSQL server (``postgres``).

Nothing is imported here, so that reading the embedded server's URL does not load
the broker's code, and the other way round.
"""
