"""The built-in token list: symbol, mint address and decimals."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Token:
    """One SPL token the engine can trade."""

    symbol: str
    mint: str
    decimals: int

    @property
    def quantum(self) -> Decimal:
        """Return the smallest representable amount (one base unit)."""
        return Decimal(1).scaleb(-self.decimals)


TOKENS: dict[str, Token] = {
    t.symbol: t
    for t in (
        Token("SOL", "So11111111111111111111111111111111111111112", 9),
        Token("USDC", "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", 6),
        Token("USDT", "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB", 6),
        Token("BONK", "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263", 5),
        Token("JUP", "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN", 6),
        Token("RAY", "4k3Dyjzvzp8eMZWUXbBCjEvwSkkk59S5iCNLY3QrkX6R", 6),
    )
}
_BY_MINT = {t.mint: t for t in TOKENS.values()}


def find_token(symbol_or_mint: str) -> Token | None:
    """Return the token named by symbol (case-insensitive) or mint, if listed."""
    return TOKENS.get(symbol_or_mint.upper()) or _BY_MINT.get(symbol_or_mint)


# Tokens launched after start-up (new pools) are not in the list; they trade with
# this many decimals, as most newly minted SPL tokens do.
LAUNCH_DECIMALS = 6


def decimals_of(symbol_or_mint: str) -> int:
    """Return a token's decimals: the listed ones, else those of a launched token."""
    token = find_token(symbol_or_mint)
    return token.decimals if token is not None else LAUNCH_DECIMALS
