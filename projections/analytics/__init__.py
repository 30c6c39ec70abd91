"""The analytics read model: execution figures per venue and per pair, from the order events."""
