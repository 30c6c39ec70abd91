"""Orders the tests submit, named once."""

from __future__ import annotations

from typing import Any

# A market sell of 1.5 SOL for USDC with 1 % slippage: small against every pool.
SELL_SOL: dict[str, Any] = {
    "type": "market",
    "tokenIn": "SOL",
    "tokenOut": "USDC",
    "amount": "1.5",
    "slippageBps": 100,
}
