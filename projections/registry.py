"""Every read model by name, for commands that take a projection's name (``oee replay``)."""

from __future__ import annotations

from collections.abc import Callable

from projections.analytics.handler import AnalyticsProjection
from projections.contract import Projection
from projections.orders.handler import OrdersProjection

PROJECTIONS: dict[str, Callable[[], Projection]] = {
    "orders": OrdersProjection,
    "analytics": AnalyticsProjection,
}
