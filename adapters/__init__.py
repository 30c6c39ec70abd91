"""I/O at the edges: settings, Kafka, PostgreSQL, the venue client, subprocesses and
the embedded broker and database."""
