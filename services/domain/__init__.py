"""Pure domain logic: tokens, the order lifecycle. No I/O here."""
