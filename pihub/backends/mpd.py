"""Music Player Daemon (``music.mpd:``; Platypush's ``backend.music.mpd`` and plugin ``music.mpd``).

One reader thread holds its own connection to mpd and waits in mpd's ``idle`` for the
``player``, ``mixer`` and ``playlist`` subsystems (no polling: mpd answers when something
changed), then reads ``status`` and ``currentsong`` and emits what differs from what it
last saw:

* ``MusicPlayEvent`` / ``MusicPauseEvent`` / ``MusicStopEvent`` when the state changes;
* ``NewPlayingTrackEvent`` when a track starts playing that is not the one last announced
  (after a stop, the same track is announced again; resuming from pause is not a new track);
* ``VolumeChangeEvent`` (``volume``: 0-100) when the volume changes.

Each carries ``status`` (mpd's status, its values as mpd sends them: strings), ``track``
(mpd's ``currentsong``: ``file``, ``title``, ``artist``, ``album``... ``{}`` when none) and
``plugin_name: music.mpd``, as Platypush's. At the first connection the current state is
announced (a state event, and the track when playing), as Platypush does; after a
reconnect only what changed meanwhile.

Actions (``music.mpd.*``, on a second connection, one action at a time): ``play``
(optionally a ``resource`` to queue and play), ``pause`` (toggles), ``stop``, ``next``,
``previous``, ``volume(level)``, ``add(resource)``, ``clear``, ``search(filter)``,
``status``, ``current_track``. mpd's line protocol cannot quote a line break, so an
argument containing one (or NUL) is refused instead of being sent as a second command.

mpd down, restarted or refusing the password: the status is ``degraded`` with the reason
(never the password), and the reader reconnects with a back-off on :attr:`clock`
(``retry_interval`` doubling up to ``max_retry_interval``); ``running`` again once it is
connected. Platypush's ``poll_seconds`` is accepted and unused; its ``server`` key is read as
``host``.

mpd is outside data: an answer that breaks the protocol (bytes that are not UTF-8, a line that
is not ``key: value``, anything python-mpd2 raises) or passes a bound is a protocol error. On
the reader it makes the status ``degraded`` with a short reason (at most
:data:`REASON_CHARS` characters, control characters escaped, never the password), counts in
``protocol_errors`` (:meth:`MpdBackend.describe_status`), is logged at most
:data:`WARN_LOG_BURST` times per :data:`WARN_LOG_WINDOW_S` seconds, and the reader
reconnects with its back-off (reset only once a connection has lasted ``max_retry_interval``);
on an action it is an :class:`~pihub.errors.ActionError` naming the command. Either way the
connection is dropped, so the next command starts on a clean one. Bounds, per command (each
answer: ``idle``, ``status``, ``currentsong`` on the reader; every action's commands), and for
mpd's greeting:

* a line: at most :data:`MAX_LINE_BYTES` bytes (64 KiB);
* an answer: at most :data:`MAX_ANSWER_BYTES` bytes (8 MiB, mpd's own default
  ``max_output_buffer_size``) and :data:`MAX_ANSWER_LINES` lines (100,000: a search of
  ~10,000 tracks with their tags);
* time: the whole answer within ``connect_timeout`` seconds, however slowly it trickles in
  (``idle`` waits without limit for mpd's first byte, then the rest of the answer has
  ``connect_timeout``).

:meth:`MpdBackend.close` shuts both connections' sockets down, so it ends a reader or an
action stuck on a slow server at once instead of waiting for it.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from pihub.backends.base import Backend, BackendStatus, BackendThread, Emit
from pihub.config.schema import Field, Schema, show
from pihub.errors import ActionError, BackendUnavailable, ProtocolError
from pihub.events import Event
from pihub.logs import LogLimiter, escape_controls
from pihub.plugin import action

CONFIG_SCHEMA = Schema({
    "host": Field(str, "localhost", aliases=("server",), doc="mpd's host"),
    "port": Field(int, 6600, min=1, max=65535, doc="mpd's TCP port"),
    "password": Field(str, None, secret=True, doc="mpd's password (use !env or !file)"),
    "poll_seconds": Field(float, None, min=0.0,
                          doc="Platypush's poll interval: accepted and unused (pihub waits in mpd's idle)"),
    "connect_timeout": Field(float, 5.0, min=0.1, max=120.0,
                             doc="seconds to connect, and for each command's whole answer"),
    "retry_interval": Field(float, 1.0, min=0.05, max=3600.0, doc="first wait before reconnecting, seconds"),
    "max_retry_interval": Field(float, 30.0, min=0.05, max=3600.0, doc="longest wait between reconnects, seconds"),
}, doc="Events and actions for a Music Player Daemon, Platypush's music.mpd layout.")

#: the mpd subsystems the reader waits on
IDLE_SUBSYSTEMS = ("player", "mixer", "playlist")
#: the state event for each mpd ``state``
STATE_EVENTS = {"play": "MusicPlayEvent", "pause": "MusicPauseEvent", "stop": "MusicStopEvent"}
PLUGIN_NAME = "music.mpd"
_UNSEEN = object()

#: Longest line of an answer from mpd, in bytes, its newline included.
MAX_LINE_BYTES = 64 * 1024
#: Most bytes of one answer from mpd.
MAX_ANSWER_BYTES = 8 * 1024 * 1024
#: Most lines of one answer from mpd.
MAX_ANSWER_LINES = 100_000
#: Bytes asked of the socket at a time.
_RECV_BYTES = 64 * 1024
#: Longest text of mpd's (an error, a bad line) quoted in a reason, in characters.
REASON_CHARS = 160
#: Warnings about mpd (unreachable, bad answers) and "reachable again": at most this many
#: lines per window (seconds, on the backend's clock); the rest are counted in the next one.
WARN_LOG_BURST = 5
WARN_LOG_WINDOW_S = 60.0


class _BoundedReader:
    """The read side of one mpd connection as python-mpd2 uses it (``readline``, ``read``,
    ``close``), read straight from the socket within the bounds of the command armed last.

    Why a reader handed to python-mpd2 rather than its own ``makefile``: python-mpd2 reads
    every line with an unbounded ``BufferedReader.readline()`` and sets only a per-``recv``
    socket timeout, so neither a line's length, an answer's size nor its total time has a
    limit, and it has no hook for one. Its socket comes from ``_connect_tcp``/``_connect_unix``
    and its read file from that socket's ``makefile("rb")`` (python-mpd2 3.x), so
    :func:`_client_class` wraps the socket there (:class:`_Wire`): every byte python-mpd2
    reads, mpd's greeting included, then passes through here, and its parsing is untouched.
    """

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self._sock = sock
        self._buf = bytearray()
        self.arm("the greeting", seconds)

    def arm(self, command: str, seconds: float, *, from_first_byte: bool = False) -> None:
        """Start the bounds of ``command``'s answer: ``seconds`` for all of it, counted from
        now, or from its first byte when ``from_first_byte`` (``idle``).

        Raises:
            ProtocolError: mpd sent bytes before the command was sent (the connection is out of step).
        """
        if self._buf:
            raise ProtocolError(f"mpd sent {len(self._buf)} bytes nobody asked for before {command}")
        self.command, self._seconds, self._lines, self._bytes = command, seconds, 0, 0
        # the real time a blocking socket waits for, not the backend's (test) clock
        self._deadline = None if from_first_byte else time.monotonic() + seconds
        self._sock.settimeout(seconds)  # for sending the command

    def readline(self, size: int = -1) -> bytes:
        """One line, its newline included; short of a newline only when the connection ended.

        Raises:
            ProtocolError: the line or the answer passed a bound.
        """
        start = 0
        while (end := self._buf.find(b"\n", start)) < 0:
            if len(self._buf) >= MAX_LINE_BYTES:
                raise self._past(f"the limit of {MAX_LINE_BYTES} bytes per line (MAX_LINE_BYTES)")
            start = len(self._buf)
            chunk = self._recv()
            if not chunk:
                line = bytes(self._buf)
                self._buf.clear()
                return line
            self._buf += chunk
        if end >= MAX_LINE_BYTES:
            raise self._past(f"the limit of {MAX_LINE_BYTES} bytes per line (MAX_LINE_BYTES)")
        line = bytes(self._buf[:end + 1])
        del self._buf[:end + 1]
        self._lines += 1
        if self._lines > MAX_ANSWER_LINES:
            raise self._past(f"the limit of {MAX_ANSWER_LINES} lines per answer (MAX_ANSWER_LINES)")
        return line

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (binary answers); b"" when the connection ended."""
        if not self._buf:
            self._buf += self._recv()
        n = len(self._buf) if size < 0 else min(size, len(self._buf))
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def close(self) -> None:
        self._buf.clear()  # the socket is python-mpd2's to close

    def _recv(self) -> bytes:
        if self._deadline is None:
            self._sock.settimeout(None)  # idle: mpd answers when something changes
        else:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise self._late()
            self._sock.settimeout(left)
        try:
            data = self._sock.recv(_RECV_BYTES)
        except TimeoutError:
            raise self._late() from None
        if self._deadline is None and data:
            self._deadline = time.monotonic() + self._seconds
        self._bytes += len(data)
        if self._bytes > MAX_ANSWER_BYTES:
            raise self._past(f"the limit of {MAX_ANSWER_BYTES} bytes per answer (MAX_ANSWER_BYTES)")
        return data

    def _late(self) -> ProtocolError:
        return self._past(f"its deadline of {self._seconds:g} s (connect_timeout)")

    def _past(self, bound: str) -> ProtocolError:
        return ProtocolError(f"the answer to {self.command} passed {bound}")


class _Wire:
    """A connected socket as python-mpd2 sees it: its read file is a :class:`_BoundedReader`;
    everything else (the write file, timeouts, ``fileno``, ``close``) is the socket's."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self.sock = sock
        self.reader = _BoundedReader(sock, seconds)

    def makefile(self, mode: str, **kwargs: Any) -> Any:
        return self.reader if "r" in mode else self.sock.makefile(mode, **kwargs)  # type: ignore[call-overload]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


@functools.cache
def _client_class() -> type:
    """python-mpd2's client reading through :class:`_Wire` (imported on first use: the module
    loads without python-mpd2, :meth:`MpdBackend.validate_environment` says what is missing)."""
    import mpd

    class BoundedClient(mpd.MPDClient):  # type: ignore[misc]
        #: the command whose answer is read now (or was last), for reasons
        current = "connect"

        def _connect_tcp(self, host: str, port: int) -> _Wire:
            return _Wire(super()._connect_tcp(host, port), self.timeout)

        def _connect_unix(self, path: str) -> _Wire:
            return _Wire(super()._connect_unix(path), self.timeout)

        def run(self, command: str, *args: Any, from_first_byte: bool = False) -> Any:
            """``command(*args)`` within the bounds of one answer (:meth:`_BoundedReader.arm`)."""
            if self._sock is None:
                raise mpd.ConnectionError("Not connected")
            self.current = command
            self._sock.reader.arm(command, self.timeout, from_first_byte=from_first_byte)
            return getattr(self, command)(*args)

    return BoundedClient


def _volume(status: Mapping[str, Any]) -> int | None:
    """The volume 0-100, or None when mpd has no mixer (no ``volume``, or -1)."""
    try:
        v = int(status.get("volume", -1))
    except (TypeError, ValueError):
        return None
    return v if 0 <= v <= 100 else None


def _check_arg(name: str, value: Any) -> str:
    """``value`` as one mpd argument: text or a number, without a line break or NUL."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ActionError(f"{name} must be text or a number, not {show(value)}")
    text = str(value)
    if any(c in text for c in "\n\r\0"):
        raise ActionError(f"{name} must not contain a line break or NUL (mpd's protocol cannot quote them), "
                          f"not {show(value)}")
    return text


class MpdBackend(Backend):
    """mpd's player events and ``music.mpd.*`` actions (module docstring)."""

    name: ClassVar[str] = "music.mpd"
    config_schema: ClassVar[Schema] = CONFIG_SCHEMA

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._thread: BackendThread | None = None
        self._emit: Emit | None = None
        # guards _idle_client and _action_client against close()'s shutting their sockets down
        self._wake_lock = threading.Lock()
        self._idle_client: Any = None
        self._action_lock = threading.Lock()  # one action at a time on the action connection
        self._action_client: Any = None
        self._closing = threading.Event()  # set by close(): an action connecting then gives up
        self._counts_lock = threading.Lock()
        self._protocol_errors = 0
        self._warn_log = LogLimiter(WARN_LOG_BURST, WARN_LOG_WINDOW_S, self.clock.now)  # the reader's only
        self._state: Any = _UNSEEN  # the last state seen by the reader
        self._track: tuple[Any, Any] | None = None  # (songid, file) last announced as playing
        self._volume: Any = _UNSEEN

    @property
    def where(self) -> str:
        """The server as logs and the status name it (never the password)."""
        return f"{self.config['host']}:{self.config['port']}"

    def validate_environment(self) -> None:
        try:
            import mpd  # noqa: F401
        except ImportError as e:
            raise BackendUnavailable(f"the music.mpd backend needs python-mpd2: pip install 'pihub[mpd]' ({e})") from None

    def open(self, emit: Emit) -> None:
        self._emit = emit
        self._closing.clear()
        self.status, self.error = BackendStatus.RUNNING, None
        self._thread = BackendThread("pihub-mpd", self._run)
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        self._shut_down("_action_client")  # an action stuck on a slow answer ends now
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.stopping.set()
            self._shut_down("_idle_client")
            thread.stop(self.config["connect_timeout"] + 5)  # a TCP connect in progress ends within its timeout
        # never forever: an action in a TCP connect ends within connect_timeout, then sees _closing
        if self._action_lock.acquire(timeout=self.config["connect_timeout"] + 5):
            try:
                self._drop_action_client()
            finally:
                self._action_lock.release()
        else:
            self.log.warning("an action on mpd at %s was still running at close", self.where)
        self.status = BackendStatus.STOPPED

    def describe_status(self) -> dict[str, Any]:
        """The base status, plus ``server`` and ``protocol_errors`` (answers from mpd that broke
        the protocol or a bound, on the reader and actions) once open."""
        status = super().describe_status()
        if self._emit is not None:
            status["server"] = self.where
            with self._counts_lock:
                status["protocol_errors"] = self._protocol_errors
        return status

    # ------------------------------------------------------------------ connections
    def _secret(self) -> str | None:
        password = self.config["password"]
        return str(password.reveal()) if hasattr(password, "reveal") else password

    def _connect(self, hold: Callable[[Any], None]) -> Any:
        """A new connected (and authenticated) client; ``hold(client)`` is called before it
        connects, so close() can shut it down while it reads the greeting or the password's answer.

        Raises:
            mpd.ConnectionError, OSError: mpd is unreachable.
            mpd.CommandError: it refused the password.
            ProtocolError, Exception: the greeting or the password's answer was bad.
        """
        client = _client_class()()
        client.timeout = self.config["connect_timeout"]
        client.idletimeout = None  # idle waits as long as nothing changes; close() wakes it
        hold(client)
        client.connect(self.config["host"], self.config["port"])
        password = self._secret()
        if password:
            try:
                client.run("password", password)
            except BaseException:
                _disconnect(client)
                raise
        return client

    def _hold(self, attr: str, client: Any) -> None:
        with self._wake_lock:
            setattr(self, attr, client)

    def _short(self, e: BaseException) -> str:
        """``e``'s text for a reason: the password masked, controls escaped, at most
        :data:`REASON_CHARS` characters."""
        text = str(e)
        secret = self._secret()
        if secret:
            text = text.replace(secret, "***")
        return escape_controls(text, REASON_CHARS)

    @staticmethod
    def _is_protocol_error(e: BaseException) -> bool:
        """Whether ``e`` is mpd's answer breaking the protocol or a bound (not mpd being
        unreachable, nor refusing a command)."""
        import mpd

        return not isinstance(e, mpd.CommandError | mpd.ConnectionError | OSError)

    def _count_protocol_error(self, e: BaseException) -> None:
        if self._is_protocol_error(e):
            with self._counts_lock:
                self._protocol_errors += 1

    def _reason(self, e: BaseException, command: str | None = None) -> str:
        """Why mpd cannot be used (``command``: the one whose answer was read), for the
        status, the logs and action errors (never the password)."""
        import mpd

        if isinstance(e, mpd.CommandError):
            if "password" in str(e).lower():
                return f"mpd at {self.where} refused the password"
            return f"mpd at {self.where} refused {command or 'a command'} ({self._short(e)})"
        during = f" during {command}" if command else ""
        if isinstance(e, mpd.ConnectionError | OSError):
            return f"mpd at {self.where} unreachable{during} ({type(e).__name__}: {self._short(e)})"
        if isinstance(e, ProtocolError):  # its text names the command and the bound
            return f"mpd at {self.where}: {self._short(e)}"
        to = f" to {command}" if command else ""
        return f"mpd at {self.where} sent a bad answer{to} ({type(e).__name__}: {self._short(e)})"

    def _log_limited(self, level: int, msg: str) -> None:
        """Log ``msg`` from the reader, at most WARN_LOG_BURST lines per WARN_LOG_WINDOW_S."""
        allowed, held = self._warn_log.allow()
        if allowed:
            self.log.log(level, "%s%s", msg, f" ({held} similar lines held back)" if held else "")

    def _shut_down(self, attr: str) -> None:
        """Shut the socket of the client in ``attr`` down now: what it reads ends at once."""
        with self._wake_lock:
            client = getattr(self, attr)
            if client is None:
                return
            try:
                fd = os.dup(client.fileno())
            except Exception:  # noqa: BLE001 - not connected (any more): nothing to wake
                return
        with socket.socket(fileno=fd) as s:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the peer

    # ------------------------------------------------------------------ the reader
    def _run(self, stopping: threading.Event) -> None:
        delay = self.config["retry_interval"]
        failed = False
        while not stopping.is_set():
            client = None
            up_since: float | None = None
            try:
                client = self._connect(functools.partial(self._hold, "_idle_client"))
                if stopping.is_set():
                    break
                self._look(client)
                up_since = self.clock.now()
                if failed:
                    self.report_recovered()
                    self._log_limited(logging.INFO, f"mpd at {self.where} reachable again")
                    failed = False
                while not stopping.is_set():
                    client.run("idle", *IDLE_SUBSYSTEMS, from_first_byte=True)
                    self._look(client)
            except Exception as e:  # noqa: BLE001 - whatever mpd's answer raises: retry, never end the reader
                if stopping.is_set():
                    break
                failed = True
                self._count_protocol_error(e)
                msg = f"{self._reason(e, getattr(self._idle_client, 'current', None))}; retrying"
                if self.report_degraded(msg):
                    self._log_limited(logging.WARNING, msg)
            finally:
                with self._wake_lock:
                    held, self._idle_client = self._idle_client, None
                if held is not None:
                    _disconnect(held)
            # a connection that failed soon (a server that answers, then breaks) keeps backing off
            if up_since is not None and self.clock.now() - up_since >= self.config["max_retry_interval"]:
                delay = self.config["retry_interval"]
            self.clock.wait(stopping, delay)
            delay = min(delay * 2, self.config["max_retry_interval"])

    def _look(self, client: Any) -> None:
        """Read status and track; emit the state, track and volume changes since last time."""
        status = dict(client.run("status"))
        track = dict(client.run("currentsong"))
        state = status.get("state")
        events: list[tuple[str, dict[str, Any]]] = []
        if state != self._state and state in STATE_EVENTS:
            events.append((STATE_EVENTS[state], {}))
        self._state = state
        if state == "play":
            key = (track.get("id"), track.get("file"))
            if track and key != self._track:
                events.append(("NewPlayingTrackEvent", {}))
                self._track = key
        elif state == "stop":
            self._track = None
        volume = _volume(status)
        if self._volume is not _UNSEEN and volume is not None and volume != self._volume:
            events.append(("VolumeChangeEvent", {"volume": volume}))
        self._volume = volume
        assert self._emit is not None
        for type_name, extra in events:
            self._emit(Event.of(type_name, source=self.name, **extra, status=status, track=track,
                                plugin_name=PLUGIN_NAME))

    # ------------------------------------------------------------------ actions
    def _drop_action_client(self) -> None:
        with self._wake_lock:
            client, self._action_client = self._action_client, None
        if client is not None:
            _disconnect(client)

    def _call(self, command: str, *args: Any) -> Any:
        """Run one mpd command on the action connection (reconnecting when it went stale).

        Raises:
            ActionError: mpd is unreachable, refused the password or the command, or its
                answer was bad or passed a bound (the connection is dropped then), or the
                backend is closing.
        """
        import mpd

        with self._action_lock:
            if self._action_client is not None:
                try:
                    self._action_client.run("ping")  # mpd drops idle connections: check before a command
                except Exception:  # noqa: BLE001 - stale or bad: a new connection for the command
                    self._drop_action_client()
            connecting = self._action_client is None
            try:
                client = self._connect(functools.partial(self._hold, "_action_client")) if connecting \
                    else self._action_client
                if self._closing.is_set():
                    raise ActionError(f"{self.name} is closing: {command} not sent")
                connecting = False
                return client.run(command, *args)
            except ActionError:
                self._drop_action_client()
                raise
            except mpd.CommandError as e:
                if connecting:  # the password
                    self._drop_action_client()
                    raise ActionError(self._reason(e)) from None
                # mpd's ACK ends its answer: the connection is still in step
                raise ActionError(f"mpd refused {command}: {self._short(e)}") from None
            except Exception as e:  # noqa: BLE001 - whatever mpd's answer raises: drop the connection
                self._drop_action_client()
                self._count_protocol_error(e)
                raise ActionError(self._reason(e, command)) from None

    @action(aliases=["status"])
    def player_status(self) -> dict[str, Any]:
        """mpd's status: ``state`` (play, pause, stop), ``volume`` (0-100, -1 without a
        mixer), ``song``, ``elapsed`` (seconds)... values as mpd sends them (strings)."""
        return dict(self._call("status"))

    @action
    def current_track(self) -> dict[str, Any]:
        """The current track (``file``, ``title``, ``artist``, ``album``, ``id``...); ``{}`` when none."""
        return dict(self._call("currentsong"))

    @action
    def play(self, resource: str | None = None) -> dict[str, Any]:
        """Play; with ``resource`` (a file of the music directory, or a URL mpd can play),
        add it to the queue and play it. Returns the status."""
        if resource is None:
            self._call("play")
        else:
            song_id = self._call("addid", _check_arg("resource", resource))
            self._call("playid", song_id)
        return self.player_status()

    @action
    def pause(self) -> dict[str, Any]:
        """Pause when playing, play otherwise (Platypush's toggle). Returns the status."""
        if self._call("status").get("state") == "play":
            self._call("pause", 1)
        else:
            self._call("play")
        return self.player_status()

    @action
    def stop(self) -> dict[str, Any]:
        """Stop playing. Returns the status."""
        self._call("stop")
        return self.player_status()

    @action
    def next(self) -> dict[str, Any]:
        """Play the next track of the queue. Returns the status."""
        self._call("next")
        return self.player_status()

    @action
    def previous(self) -> dict[str, Any]:
        """Play the previous track of the queue. Returns the status."""
        self._call("previous")
        return self.player_status()

    @action
    def volume(self, level: int) -> dict[str, Any]:
        """Set the volume to ``level`` (0-100, percent). Returns the status."""
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 100:
            raise ActionError(f"level must be a whole number from 0 to 100, not {show(level)}")
        self._call("setvol", level)
        return self.player_status()

    @action
    def add(self, resource: str) -> dict[str, Any]:
        """Append ``resource`` (a file or directory of the music directory, or a URL) to the
        queue. Returns the status."""
        self._call("add", _check_arg("resource", resource))
        return self.player_status()

    @action
    def clear(self) -> dict[str, Any]:
        """Empty the queue (and stop). Returns the status."""
        self._call("clear")
        return self.player_status()

    @action
    def search(self, filter: dict[str, Any] | list[Any]) -> list[dict[str, Any]]:  # noqa: A002 - Platypush's name
        """The database's tracks matching every ``{tag: text}`` of ``filter`` (mpd's
        ``search``: case-insensitive, a part of the tag matches; tags such as ``artist``,
        ``title``, ``album``, ``file``, ``any``). A list ``[tag, text, tag, text...]`` works too.

        Returns:
            the matching tracks (``file``, ``title``, ``artist``...), in mpd's order.
        """
        if isinstance(filter, Mapping):
            pairs = list(filter.items())
        elif isinstance(filter, list) and len(filter) % 2 == 0:
            pairs = list(zip(filter[::2], filter[1::2], strict=True))
        else:
            raise ActionError(f"filter must be a mapping of tag to text (or a [tag, text, ...] list), not {show(filter)}")
        if not pairs:
            raise ActionError("filter must name at least one tag (e.g. {artist: ..., title: ...})")
        args: list[str] = []
        for tag, text in pairs:
            args += [_check_arg("a filter tag", tag), _check_arg(f"filter {show(tag)}", text)]
        return [dict(t) for t in self._call("search", *args)]


def _disconnect(client: Any) -> None:
    """Close a client, whatever state its connection is in."""
    try:
        client.disconnect()
    except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is dropped anyway
        pass
