"""The trigger service: turns market data and time into trigger and expiry commands."""
