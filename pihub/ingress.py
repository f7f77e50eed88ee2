"""Requests that arrive on a raw channel (TCP, Redis, MQTT): one gate for all of them.

A channel reads one message, hands it to :meth:`RequestGate.handle` with where it came
from, and sends back what it returns: the Platypush response envelope
(``{"type": "response", "id": ..., "response": {"output": ..., "errors": [...]}}``), or
nothing for an event that was published. The gate does, in this order:

1. **Shape**: UTF-8 JSON, an object, nested at most as deep as the JSON decoder allows.
   Anything else is answered with an error response (with the request's ``id`` when one
   could be read), never an exception. How big a message may be is the channel's to
   bound, as it reads (a TCP line, a Redis value, an MQTT payload).
2. **Who**: the message's own ``token`` (the key Platypush clients put in the envelope),
   else the token the channel established for the connection. It is checked by the one
   access policy (:class:`pihub.web.access.Access`), as an API token of a user, or the
   hub's headless token; a message without a valid token is refused with
   ``INVALID_CREDENTIALS``, and so is one whose token lacks the ``control`` scope
   (requests and posted events alike). Refusals are logged at most once per
   :data:`REFUSAL_LOG_INTERVAL_S` seconds of the hub's clock per channel, with the peer
   and a count, never the token.
   Unlike Platypush, whose Redis and TCP backends run whatever arrives, nothing runs
   unauthenticated.
3. **Where**: a request whose ``target`` names another device is refused (Platypush
   drops it silently, so the client waits for ever); an empty ``target`` means this one.
4. **Run**: a request runs through the hub's :meth:`~pihub.hub.Hub.execute` (the same
   path as ``POST /execute``) on the calling channel's thread; an event is emitted with
   ``source`` set to the channel, through the channel's own ``emit`` (its producer on
   the bus), or published by the hub when the caller has none.

The gate holds no per-connection state and is safe to call from many threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from pihub.clock import SYSTEM, Clock
from pihub.errors import MessageError
from pihub.events import Event
from pihub.logs import LogLimiter
from pihub.messages import Request, Response, json_kind, loads, parse
from pihub.web.access import TOKEN, Access, Credential, Refused, RequestView

log = logging.getLogger("pihub.ingress")

#: Seconds between two log lines about refused messages on one channel.
REFUSAL_LOG_INTERVAL_S: Final = 10.0


class GateHub(Protocol):
    """What the gate needs of the hub."""

    @property
    def device_id(self) -> str: ...

    def execute(self, request: Request) -> Response: ...

    def publish(self, event: Event) -> bool: ...


class RequestGate:
    """Parse, authenticate, route and run one message of a raw channel (module docstring).

    Args:
        hub: runs requests and publishes events.
        auth: the hub's :class:`pihub.auth.Auth` (API tokens and the headless token).
        clock: the time the refusal log's rate limit runs on (the hub's).
    """

    def __init__(self, hub: GateHub, auth: Any, clock: Clock = SYSTEM) -> None:
        self.hub = hub
        self.clock = clock
        # tokens only: no sessions, no passwords (argon2 per message would be a DoS lever)
        self._access = Access(auth, session_cookie=None, accept_passwords=False, registration_hint=False)
        self._lock = threading.Lock()
        self._refusal_logs: dict[str, LogLimiter] = {}  # per channel (a fixed few: tcp, redis...)

    def handle(self, message: bytes | str | Mapping[str, Any], *, channel: str, peer: str = "",
               token: str | None = None, trusted: bool = False,
               emit: Callable[[Event], bool] | None = None,
               on_accepted: Callable[[], object] | None = None) -> dict[str, Any] | None:
        """Run one message; the response envelope to send back, or None (an event published).

        Args:
            message: the raw JSON (bytes or str) or an already decoded object.
            channel: the channel's name for the response's ``target``, the event's ``source``
                and the logs (``tcp``, ``redis``, ``mqtt``).
            peer: who sent it, for the logs (an address, a broker user).
            token: the token the channel established for this connection, if any; the
                message's own ``token`` field wins.
            trusted: the channel vouches for the sender, so no token is asked (MQTT's
                ``trusted_users``, whose names the broker's ACL enforces); the other steps
                are the same.
            emit: where an event goes (the channel's ``emit``); None: the hub's publish.
            on_accepted: called once the sender passed step 2 (a valid token with the
                ``control`` scope, or ``trusted``), whatever becomes of the message then:
                how a channel learns that a connection has authenticated.
        """
        wire_size = 0
        if isinstance(message, (bytes, bytearray, str)):
            wire_size = len(message)
            try:
                decoded = loads(message)
            except MessageError as e:
                return self._error(None, channel, f"message is {e}")
        else:
            decoded = message
        if not isinstance(decoded, Mapping):
            return self._error(None, channel, f"message must be a JSON object, not {json_kind(decoded)}")
        msg_id = decoded.get("id") if isinstance(decoded.get("id"), (str, int)) else None
        given = decoded.get("token", token)
        try:
            if not trusted:
                self._authorise(given if isinstance(given, str) else "")
        except Refused as e:
            self._log_refusal(channel, peer, e.message)
            return self._error(msg_id, channel, f"{e.name}: {e.message}")
        if on_accepted is not None:
            on_accepted()
        body = {k: v for k, v in decoded.items() if k != "token"}
        try:
            parsed = parse(body, default_origin=channel, wire_size=wire_size)
        except MessageError as e:
            return self._error(msg_id, channel, str(e))
        if isinstance(parsed, Event):
            parsed.source = channel
            if not (emit or self.hub.publish)(parsed):
                return self._error(msg_id, channel, "the event bus is full; try again")
            return None
        device = self.hub.device_id
        if parsed.target and parsed.target != device:
            return self._error(parsed.id, channel, f"target {parsed.target!r} is not this device ({device!r}); "
                                                   "send it to that device's own channel")
        parsed.origin = channel
        response = self.hub.execute(parsed)
        return response.to_dict()

    def _authorise(self, token: str) -> None:
        caller = self._access.authenticate(Credential(TOKEN, token) if token else None,
                                           RequestView("POST", {}))
        Access.check_scope(caller, "control")

    def _error(self, msg_id: Any, channel: str, error: str) -> dict[str, Any]:
        return Response(errors=[error], id="" if msg_id is None else str(msg_id), target=channel,
                        origin=self.hub.device_id).to_dict()

    def _log_refusal(self, channel: str, peer: str, why: str) -> None:
        with self._lock:
            limiter = self._refusal_logs.get(channel)
            if limiter is None:
                limiter = self._refusal_logs[channel] = LogLimiter(1, REFUSAL_LOG_INTERVAL_S, self.clock.now)
            allowed, held = limiter.allow()
        if allowed:
            log.warning("%s: refused a message from %s: %s (%d refused in the last %.0f s)",
                        channel, peer or "unknown", why, held + 1, REFUSAL_LOG_INTERVAL_S)
