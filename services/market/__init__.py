"""The market service: the venues' pools as a stream of market messages, and the
simulated activity around them (price drift from other traders, token launches)."""
