"""The WebSocket protocols, as the OpenAPI document (and so ``/docs``) describes them.

OpenAPI has no words for a WebSocket, so the two sockets are described in the
document's description, in the shape an AsyncAPI channel would take: the address
and its parameters, the messages sent, and the close codes.
"""

from __future__ import annotations

DESCRIPTION = """
Submit DEX swap orders over HTTP and follow them live over WebSockets.

Every error answers `{"error": {"code", "message", "field"}}`, 4xx and 5xx alike;
a 503 carries `Retry-After`. Amounts and prices are JSON strings of ASCII digits
with an optional fraction (`"1.5"`): no sign, exponent, underscore or space. Token
symbols are case-insensitive and answered upper-case.

## WebSocket: one order — `GET /api/orders/execute?orderId=…&lastSeq=…`

| parameter | |
|---|---|
| `orderId` | the order's id (UUID); required |
| `lastSeq` | optional, 1 to 18 ASCII digits: only the events after this `seq` |

The server sends, as JSON text messages, every event of the order: first its
history, then live, with no gap or duplicate:
`{"orderId", "seq", "type", "status", "timestamp", "eventId", "details"}`
(`details`: the event's own fields, camelCase). It sends nothing else and reads
nothing; a client that reconnects with the last `seq` it saw gets exactly what it
missed. After the terminal event (`confirmed`, `failed`, `cancelled` or
`expired`) it closes with 1000 and the status as the reason.

## WebSocket: the firehose — `GET /api/stream?status=…&token=…&venue=…&type=…&from=…`

Every order event, each as above plus `position` (`topic`, `partition`, `offset`)
and `cursor` (the `from` that resumes just after it). Filters are comma-separated
lists, and an event must match every filter given: `status` (an order status),
`token` (either side of the pair), `venue`, `type` (market, limit, sniper). `from`
is `now` (default), `earliest`, or a cursor such as `0:12,1:40`.

## Close codes

| code | when |
|---|---|
| 1000 | the order ended: `confirmed`, `failed`, `cancelled` or `expired` (the reason) |
| 1001 / 1012 | the gateway is stopping |
| 1011 | a heartbeat ping got no pong in time |
| 4400 | a bad query parameter (the reason names it) |
| 4404 | an unknown order, or an `orderId` that is no UUID |
| 4408 | the client fell too far behind (`OEE_STREAM_BUFFER` events) |
| 4410 | the cursor points before the first event still on the log |
| 4429 | too many sockets, from this client or in all |
| 4503 | history the socket needs cannot be read now |
"""
