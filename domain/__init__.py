"""Pure domain logic: tokens, prices, the order lifecycle and the routing decision. No I/O here."""
