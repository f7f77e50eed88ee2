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
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

from pihub.backends.base import Backend, BackendStatus, BackendThread, Emit
from pihub.config.schema import Field, Schema, show
from pihub.errors import ActionError, BackendUnavailable
from pihub.events import Event
from pihub.plugin import action

CONFIG_SCHEMA = Schema({
    "host": Field(str, "localhost", aliases=("server",), doc="mpd's host"),
    "port": Field(int, 6600, min=1, max=65535, doc="mpd's TCP port"),
    "password": Field(str, None, secret=True, doc="mpd's password (use !env or !file)"),
    "poll_seconds": Field(float, None, min=0.0,
                          doc="Platypush's poll interval: accepted and unused (pihub waits in mpd's idle)"),
    "connect_timeout": Field(float, 5.0, min=0.1, max=120.0, doc="seconds to connect and for each command"),
    "retry_interval": Field(float, 1.0, min=0.05, max=3600.0, doc="first wait before reconnecting, seconds"),
    "max_retry_interval": Field(float, 30.0, min=0.05, max=3600.0, doc="longest wait between reconnects, seconds"),
}, doc="Events and actions for a Music Player Daemon, Platypush's music.mpd layout.")

#: the mpd subsystems the reader waits on
IDLE_SUBSYSTEMS = ("player", "mixer", "playlist")
#: the state event for each mpd ``state``
STATE_EVENTS = {"play": "MusicPlayEvent", "pause": "MusicPauseEvent", "stop": "MusicStopEvent"}
PLUGIN_NAME = "music.mpd"
_UNSEEN = object()


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
        self._idle_lock = threading.Lock()  # guards _idle_client against close()'s wake-up
        self._idle_client: Any = None
        self._action_lock = threading.Lock()  # one action at a time on the action connection
        self._action_client: Any = None
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
        self.status, self.error = BackendStatus.RUNNING, None
        self._thread = BackendThread("pihub-mpd", self._run)
        self._thread.start()

    def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.stopping.set()
            self._wake()
            thread.stop(self.config["connect_timeout"] + 5)  # a connect in progress ends within its timeout
        with self._action_lock:
            self._drop_action_client()
        self.status = BackendStatus.STOPPED

    def describe_status(self) -> dict[str, Any]:
        """The base status, plus ``server`` once open."""
        status = super().describe_status()
        if self._emit is not None:
            status["server"] = self.where
        return status

    # ------------------------------------------------------------------ connections
    def _connect(self) -> Any:
        """A new connected (and authenticated) client.

        Raises:
            mpd.ConnectionError, OSError: mpd is unreachable.
            mpd.CommandError: it refused the password.
        """
        import mpd

        client = mpd.MPDClient()
        client.timeout = self.config["connect_timeout"]
        client.idletimeout = None  # idle waits as long as nothing changes; close() wakes it
        client.connect(self.config["host"], self.config["port"])
        password = self.config["password"]
        if password:
            try:
                client.password(password.reveal() if hasattr(password, "reveal") else password)
            except BaseException:
                _disconnect(client)
                raise
        return client

    def _reason(self, e: BaseException) -> str:
        """Why mpd cannot be used, for the status and the logs (never the password)."""
        import mpd

        if isinstance(e, mpd.CommandError):
            if "password" in str(e).lower():
                return f"mpd at {self.where} refused the password"
            return f"mpd at {self.where} refused a command ({e})"
        return f"mpd at {self.where} unreachable ({type(e).__name__}: {e})"

    def _wake(self) -> None:
        """End the reader's idle now: shut its socket down (the reader then sees stopping)."""
        with self._idle_lock:
            client = self._idle_client
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
        import mpd

        delay = self.config["retry_interval"]
        failed = False
        while not stopping.is_set():
            client = None
            try:
                client = self._connect()
                with self._idle_lock:
                    self._idle_client = client
                if stopping.is_set():
                    break
                if failed:
                    self.report_recovered()
                    self.log.info("mpd at %s reachable again", self.where)
                    failed = False
                delay = self.config["retry_interval"]
                self._look(client)
                while not stopping.is_set():
                    client.idle(*IDLE_SUBSYSTEMS)
                    self._look(client)
            except (mpd.MPDError, OSError) as e:
                if stopping.is_set():
                    break
                failed = True
                msg = f"{self._reason(e)}; retrying"
                if self.report_degraded(msg):
                    self.log.warning("%s", msg)
            finally:
                with self._idle_lock:
                    self._idle_client = None
                if client is not None:
                    _disconnect(client)
            self.clock.wait(stopping, delay)
            delay = min(delay * 2, self.config["max_retry_interval"])

    def _look(self, client: Any) -> None:
        """Read status and track; emit the state, track and volume changes since last time."""
        status = dict(client.status())
        track = dict(client.currentsong())
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
        client, self._action_client = self._action_client, None
        if client is not None:
            _disconnect(client)

    def _call(self, command: str, *args: Any) -> Any:
        """Run one mpd command on the action connection (reconnecting when it went stale).

        Raises:
            ActionError: mpd is unreachable, refused the password or the command.
        """
        import mpd

        with self._action_lock:
            if self._action_client is not None:
                try:
                    self._action_client.ping()  # mpd drops idle connections: check before a command
                except (mpd.MPDError, OSError):
                    self._drop_action_client()
            try:
                if self._action_client is None:
                    self._action_client = self._connect()
                return getattr(self._action_client, command)(*args)
            except mpd.CommandError as e:
                if self._action_client is None:  # the password, at connect
                    raise ActionError(self._reason(e)) from None
                raise ActionError(f"mpd refused {command}: {e}") from None
            except (mpd.MPDError, OSError) as e:
                self._drop_action_client()
                raise ActionError(self._reason(e)) from None

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
