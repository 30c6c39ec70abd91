"""The venues as the engine sees them: the ``Venue`` protocol, its HTTP client, and
quoting every venue at once."""
