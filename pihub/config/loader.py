"""Load pihub's configuration: find the file, follow includes, map Platypush keys, validate.

:func:`load` returns a :class:`Config` or raises :class:`~pihub.errors.ConfigError`
holding *every* problem found, each located as ``file:line:col: path: message``.

**Finding the file** (when no path is given): ``$PIHUB_CONFIG``, then the first existing
of ``~/.config/pihub/config.yaml`` and ``/etc/pihub/config.yaml``; when neither exists,
``~/.config/platypush/config.yaml`` is read as an import source, with a warning. A file
named explicitly (the argument or ``$PIHUB_CONFIG``) must exist: it is never silently
replaced by another one. No file anywhere raises :class:`ConfigNotFound`, naming every
place looked at; a file that exists but cannot be read raises :class:`ConfigUnreadable`
(the CLI exits 2 for both).

**Top-level keys** (Platypush-compatible, see PLATYPUSH.md §3):

* ``include``: a path or a list of paths, relative to the including file; the files are
  merged where the ``include`` key stands, so keys after it override the included ones.
  Includes nest; a cycle is an error naming it. The same key defined in two files is a
  warning naming both places (the later definition wins); in one file, two spellings of
  one key (``backend.http`` and ``http``) are an error. A file included again (by
  another file, or twice) is not read again: the entries it gave are merged again
  where the new ``include`` stands. Only regular files are read; a config is at most
  :data:`MAX_CONFIG_FILES` files, includes nest at most :data:`MAX_INCLUDE_DEPTH` deep,
  and all files together hold at most
  :data:`~pihub.config.yamlsrc.MAX_CONFIG_NODES` values (see
  :mod:`pihub.config.yamlsrc` for the other limits).
* ``device_id`` (default: the host name), ``token`` (a :class:`Secret`), ``workdir``
  (default ``$PIHUB_WORKDIR``, else ``/var/lib/pihub`` for root, else
  ``~/.local/share/pihub``; a relative path is relative to the file that sets it),
  ``environment`` (name -> string; numbers are turned into strings; the hub exports it),
  ``constants`` (any mapping), ``logging`` (``level``, ``format``, ``filename``).
* ``event.hook.NAME``: ``{if: mapping, then: list or one action mapping, priority: int}``;
  ``then`` is always a list in :class:`HookSpec`.
* ``procedure.NAME``, ``procedure.sync.NAME``, ``procedure.async.NAME`` and
  ``procedure.NAME(a, b)``: a list of steps (see :func:`parse_procedure_key`).
* ``cron.NAME``: not supported yet; kept aside in :attr:`Config.crons` with a warning.
* Platypush's legacy keys (:data:`LEGACY_SECTIONS`, ``backend.sensor.X`` ->
  ``sensor.X``) are read under their pihub name with a warning naming it;
  ``camera.pi.legacy`` is an error.
* Anything else is a section, which must be one of the ``sections`` given to
  :func:`load` and is validated by its :class:`~pihub.config.schema.Schema`.

**Disabling** (sections, hooks and crons): ``disabled: true`` drops the entry with a note
(:attr:`Config.notes`); ``enabled: false`` keeps it and adds its key to
:attr:`Config.disabled`; ``enabled: true`` and ``disabled: false`` are stripped.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pihub.config.schema import Field, Schema, coerce, dict_of, show, suggest
from pihub.config.yamlsrc import (
    MAX_CONFIG_NODES,
    UNKNOWN,
    Document,
    Location,
    Secret,
    hashable,
    read_document,
)
from pihub.errors import (
    ConfigError,
    ConfigNotFound,
    ConfigProblem,
    ConfigUnreadable,
    Problem,
    close_matches,
    format_path,
)

__all__ = [
    "CORE_KEYS",
    "LEGACY_SECTIONS",
    "SPLIT_SECTIONS",
    "SYSTEM_CONFIG",
    "Config",
    "HookSpec",
    "ProcedureSpec",
    "load",
    "parse_procedure_key",
    "search_paths",
]

#: The system-wide config file, looked at after the user's.
SYSTEM_CONFIG: Final = "/etc/pihub/config.yaml"
_USER_CONFIG: Final = "~/.config/pihub/config.yaml"
_PLATYPUSH_CONFIG: Final = "~/.config/platypush/config.yaml"

#: Platypush section names read under their pihub name (with a warning naming it).
LEGACY_SECTIONS: Final[Mapping[str, str]] = {
    "backend.http": "http",
    "backend.midi": "midi",
    "backend.button.flic": "flic",
    "backend.scard": "smartcard",
    "backend.camera.pi": "camera.pi",
    "backend.sensor.mcp3008": "adc",
    "backend.sensor.serial": "serial",
    "backend.mqtt": "mqtt",
    "backend.inotify": "file_watch",
    "backend.file.monitor": "file_watch",
    "file.monitor": "file_watch",
    "backend.http.poll": "rss",
    "backend.tcp": "tcp",
    "backend.redis": "redis_queue",
    "backend.music.mpd": "music.mpd",
    "backend.mpd": "music.mpd",
    "backend.serial": "serial",
    "gpio.sensor.mcp3008": "adc",
    "sensor.mcp3008": "adc",
}
_LEGACY_SENSOR_PREFIX: Final = "backend.sensor."

#: Platypush configures one device in two sections, a plugin (wiring, channels) and a
#: ``backend.sensor.*`` (polling, thresholds); pihub has one section for both. The
#: spellings listed for a section are merged into it key by key, in one file or across
#: included ones; one key set in two of them to different values is an error.
SPLIT_SECTIONS: Final[Mapping[str, frozenset[str]]] = {
    "adc": frozenset({"adc", "gpio.sensor.mcp3008", "sensor.mcp3008", "backend.sensor.mcp3008"}),
    "serial": frozenset({"serial", "backend.sensor.serial"}),
    "music.mpd": frozenset({"music.mpd", "backend.music.mpd", "backend.mpd"}),
}

#: Platypush sections pihub refuses, with the reason.
UNSUPPORTED_SECTIONS: Final[Mapping[str, str]] = {
    "camera.pi.legacy": "the legacy picamera (v1) stack is not supported; use 'camera.pi' (picamera2)",
    "backend.websocket": "requests over a websocket are served by the http section's websocket server at "
                         "ws://HOST:<http.websocket_port>/ws/requests (Platypush 0.50's layout; the token "
                         "may ride in the first request); remove this section, and set "
                         "http.websocket_port: 8765 to keep the old port",
}

#: The top-level keys that are not sections.
CORE_KEYS: Final = ("include", "device_id", "token", "workdir", "environment", "constants", "logging")

#: Most files a config may be made of, the main one included; real configs use a handful.
MAX_CONFIG_FILES: Final = 64

#: Deepest chain of includes (the main file includes at depth 1); real configs use 1 or 2.
MAX_INCLUDE_DEPTH: Final = 8

_HOOK_PREFIX: Final = "event.hook."
_PROCEDURE_PREFIX: Final = "procedure."
_CRON_PREFIX: Final = "cron."

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

LOGGING_SCHEMA: Final = Schema({
    "level": Field(str, "INFO", choices=LOG_LEVELS, doc="the lowest level logged (case-insensitive)"),
    "format": Field(str, None, doc="a logging format string; None for pihub's default"),
    "filename": Field(str, None, doc="a log file; None logs to stderr (the journal under systemd)"),
}, doc="logging")

HOOK_SCHEMA: Final = Schema({
    "if": Field(dict, doc="the event condition: type and attribute conditions"),
    "then": Field((list, dict), doc="the steps to run: a list, or a single action mapping"),
    "priority": Field(int, 0, doc="the hook's priority; higher runs in preference"),
}, doc="an event hook")




@dataclass(frozen=True)
class HookSpec:
    """One ``event.hook.NAME`` entry, validated but not compiled.

    Attributes:
        name: the hook name (``door`` for ``event.hook.door``).
        if_: the ``if`` mapping, as written.
        then: the steps; a single action mapping is normalised to a one-element list.
        priority: the ``priority`` (0 when absent).
        path: the config path of the hook, ``("event.hook.door",)``; extend it for
            :meth:`Config.problem`, e.g. ``path + ("then", 2, "args", "x")``.
        enabled: False when the hook has ``enabled: false`` (its key is then also in
            :attr:`Config.disabled`); the engine MUST NOT run a disabled hook.
    """

    name: str
    if_: dict[str, Any]
    then: list[Any]
    priority: int
    path: tuple[Hashable, ...]
    enabled: bool = True


@dataclass(frozen=True)
class ProcedureSpec:
    """One ``procedure...`` entry, validated but not compiled.

    Attributes:
        key: the key as written (``procedure.async.blink(pin, times)``).
        name: the procedure name (``blink``), called as ``procedure.blink``.
        params: the declared parameter names, in order (recorded, not enforced, as in
            Platypush).
        is_async: True for ``procedure.async.NAME``.
        steps: the list of steps, as written.
        path: the config path, ``(key,)``; extend it for :meth:`Config.problem`.
    """

    key: str
    name: str
    params: tuple[str, ...]
    is_async: bool
    steps: list[Any]
    path: tuple[Hashable, ...]


_NAME_RE: Final = re.compile(r"[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*")
_PROC_RE: Final = re.compile(r"(?P<head>[^()]*?)\s*(?:\((?P<params>[^()]*)\))?\s*")


def parse_procedure_key(key: str) -> tuple[str, tuple[str, ...], bool]:
    """Split a procedure key into its name, parameter names and async flag.

    ``procedure.NAME``, ``procedure.sync.NAME`` -> sync; ``procedure.async.NAME`` ->
    async; an optional ``(a, b)`` suffix declares parameters (``()`` declares none).
    ``NAME`` is made of letters, digits, ``_`` and ``-``, in dot-separated parts; unlike
    Platypush, which keeps only the part after the second dot
    (``procedure.lights.on`` -> ``on``), pihub keeps the whole dotted name
    (``lights.on``).

    Args:
        key: the top-level key.

    Returns:
        ``(name, params, is_async)``.

    Raises:
        ValueError: the key is not a valid procedure key; the message says why.
    """
    if not key.startswith(_PROCEDURE_PREFIX):
        raise ValueError(f"procedure keys start with 'procedure.', not {key!r}")
    match = _PROC_RE.fullmatch(key[len(_PROCEDURE_PREFIX):])
    if match is None:
        raise ValueError(f"bad procedure key {key!r} (expected procedure[.sync|.async].NAME[(a, b)])")
    head = match["head"]
    is_async = False
    for mode in ("sync.", "async."):
        if head.startswith(mode) and len(head) > len(mode):
            head, is_async = head[len(mode):], mode == "async."
            break
    if not _NAME_RE.fullmatch(head):
        raise ValueError(f"bad procedure name {head!r} in {key!r} (letters, digits, '_' and '-', "
                         f"in dot-separated parts)")
    params: list[str] = []
    if match["params"] is not None and match["params"].strip():
        for raw in match["params"].split(","):
            param = raw.strip()
            if not param.isidentifier():
                raise ValueError(f"bad parameter name {param!r} in {key!r} (must be an identifier)")
            if param in params:
                raise ValueError(f"parameter {param!r} is declared twice in {key!r}")
            params.append(param)
    return head, tuple(params), is_async


@dataclass
class _Entry:
    """One top-level key as merged from the files."""

    canon: str  # the key pihub reads it as: section name, "event.hook.N", "procedure.N"...
    orig: Any  # the key as written in its file
    kind: str  # core, hook, procedure, cron or section
    value: Any
    doc: Document
    # a section merged from several spellings (SPLIT_SECTIONS): the entries as written,
    # and which of them each option key (as written) comes from
    parts: list[_Entry] = field(default_factory=list)
    owner: dict[Hashable, _Entry] = field(default_factory=dict)


class _Sources:
    """Maps config paths to source locations across the merged files."""

    def __init__(self, main_file: str) -> None:
        self.main_file = main_file
        self.by_key: dict[Hashable, _Entry] = {}

    def add(self, entry: _Entry) -> None:
        """Index a final entry by the key pihub reads and the key as written."""
        self.by_key[entry.canon] = entry
        for part in entry.parts or [entry]:
            self.by_key.setdefault(part.orig, entry)

    def locate(self, path: tuple[Hashable, ...], *, at_key: bool = False) -> Location:
        """Locate a config path; see :meth:`Config.locate`."""
        if not path:
            return Location(self.main_file, 1, 1) if self.main_file else UNKNOWN
        entry = self.by_key.get(path[0]) if hashable(path[0]) else None
        if entry is None:
            return UNKNOWN
        if len(path) > 1 and hashable(path[1]) and path[1] in entry.owner:
            entry = entry.owner[path[1]]
        return entry.doc.locate((entry.orig, *path[1:]), at_key=at_key)

    def problem(self, path: tuple[Hashable, ...], message: str, *, warning: bool = False,
                key: Hashable | None = None) -> Problem:
        """A located problem; see :meth:`Config.problem`."""
        if key is not None:
            loc = self.locate((*path, key), at_key=True)
        else:
            loc = self.locate(path)
        return Problem(format_path(path), message, loc.file, loc.line, loc.col, warning)

    def from_config_problem(self, problem: ConfigProblem, prefix: tuple[Hashable, ...] = ()) -> Problem:
        """Locate a ConfigProblem; see :meth:`Config.located`."""
        return self.problem((*prefix, *problem.path), problem.message,
                            warning=bool(getattr(problem, "warning", False)), key=getattr(problem, "key", None))


@dataclass(frozen=True)
class Config:
    """A loaded, validated configuration.

    Attributes:
        device_id: this hub's name (default: the host name).
        token: the request token, or None.
        workdir: the data directory (absolute unless the default is relative).
        environment: variables for the hub to export to ``os.environ``.
        constants: the ``constants`` mapping, for ``${constants...}``.
        logging: ``{"level": "INFO", "format": None, "filename": None}`` style.
        hooks: the event hooks, in file order.
        procedures: the procedures, in file order.
        sections: section name -> validated options (raw mappings when :func:`load` got
            no ``sections``), including sections marked disabled.
        disabled: keys (section names, ``event.hook.NAME``, ``cron.NAME``) that have
            ``enabled: false``.
        files: every file read, the main one first.
        warnings: located warnings (legacy keys, overrides, renamed options...).
        notes: located informational notes (entries dropped by ``disabled: true``).
        crons: ``cron.NAME`` -> body, kept aside (cron jobs are not supported yet).
    """

    device_id: str
    token: Secret | None
    workdir: str
    environment: dict[str, str]
    constants: dict[str, Any]
    logging: dict[str, Any]
    hooks: list[HookSpec]
    procedures: list[ProcedureSpec]
    sections: dict[str, dict[str, Any]]
    disabled: set[str]
    files: list[str]
    warnings: list[Problem]
    notes: list[Problem] = field(default_factory=list)
    crons: dict[str, Any] = field(default_factory=dict)
    _sources: _Sources | None = field(default=None, repr=False, compare=False)

    def locate(self, path: tuple[Hashable, ...], *, at_key: bool = False) -> Location:
        """Locate the value (or with ``at_key``, the key) at a config path.

        Args:
            path: starts with a top-level key as pihub reads it (a section name, even if
                written under its Platypush name; ``event.hook.NAME``; a procedure's key
                as written, see :attr:`ProcedureSpec.path`), then keys and indices. An
                index 0 into a single mapping is the mapping itself (a hook's ``then``).

        Returns:
            The file, 1-based line and column; the nearest existing enclosing entry when
            the path does not exist in full; ``Location("", 0, 0)`` when unknown.
        """
        return self._sources.locate(tuple(path), at_key=at_key) if self._sources else UNKNOWN

    def problem(self, path: tuple[Hashable, ...], message: str, warning: bool = False, *,
                key: Hashable | None = None) -> Problem:
        """Turn a path and message into a located :class:`~pihub.errors.Problem`.

        Args:
            path: the config path of the offending value, or of the mapping holding the
                offending ``key``.
            message: a lower-case fragment naming the bad value and what is allowed.
            warning: True for a warning.
            key: a key of the mapping at ``path`` the problem is about (unknown,
                missing...): the problem is then located at that key, or at the
                mapping's own key when it is missing.

        Returns:
            The problem, shown as ``file:line:col: path: message``.
        """
        sources = self._sources or _Sources("")
        return sources.problem(tuple(path), message, warning=warning, key=key)

    def located(self, problem: ConfigProblem, prefix: tuple[Hashable, ...] = ()) -> Problem:
        """Locate a :class:`~pihub.errors.ConfigProblem` raised by a later compile step.

        Args:
            problem: the problem; its path is relative to ``prefix``. A
                :class:`~pihub.errors.SchemaProblem` keeps its ``key`` and
                ``warning``.
            prefix: the path of the part that was compiled, e.g. ``hook.path``.

        Returns:
            The located problem.
        """
        sources = self._sources or _Sources("")
        return sources.from_config_problem(problem, tuple(prefix))


def search_paths(environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """List the places :func:`load` looks at, in order, when no path is given.

    Args:
        environ: the environment; ``os.environ`` when None.

    Returns:
        ``(path, why)`` pairs; ``why`` is ``"env"`` for ``$PIHUB_CONFIG``, ``"user"``,
        ``"system"``, or ``"platypush"`` for the import source.
    """
    env = os.environ if environ is None else environ
    out: list[tuple[str, str]] = []
    if env.get("PIHUB_CONFIG"):
        out.append((os.path.expanduser(env["PIHUB_CONFIG"]), "env"))
    out.append((os.path.expanduser(_USER_CONFIG), "user"))
    out.append((SYSTEM_CONFIG, "system"))
    out.append((os.path.expanduser(_PLATYPUSH_CONFIG), "platypush"))
    return out


def _find(path: str | None, problems: list[Problem]) -> str:
    """The config file to read; appends the platypush-import warning to ``problems``."""
    if path is not None:
        path = os.path.expanduser(path)
        if not os.path.exists(path):
            raise ConfigNotFound(f"config file {path!r} does not exist", [path])
        return path
    places = search_paths()
    if places[0][1] == "env":
        env_path = places[0][0]
        if not os.path.exists(env_path):
            raise ConfigNotFound(f"config file {env_path!r} (from $PIHUB_CONFIG) does not exist", [env_path])
        return env_path
    for candidate, why in places:
        if os.path.exists(candidate):
            if why == "platypush":
                problems.append(Problem(
                    "", f"no pihub config found; reading the platypush config {candidate!r} "
                        f"(copy it to {places[0][0]!r} to silence this)", candidate, 1, 1, warning=True))
            return candidate
    looked = [p for p, _ in places]
    raise ConfigNotFound("no config file found; looked at $PIHUB_CONFIG (not set), "
                         + ", ".join(looked) + "; create one or pass a path", ["$PIHUB_CONFIG", *looked])


def _default_workdir() -> str:
    """``$PIHUB_WORKDIR``, else /var/lib/pihub for root, else ~/.local/share/pihub."""
    env = os.environ.get("PIHUB_WORKDIR")
    if env:
        return os.path.expanduser(env)
    if getattr(os, "geteuid", lambda: -1)() == 0:
        return "/var/lib/pihub"
    return os.path.expanduser("~/.local/share/pihub")


class _Loader:
    """One run of :func:`load`: merges the files, then interprets the entries."""

    def __init__(self, main_file: str, sections: Mapping[str, Schema] | None, problems: list[Problem]) -> None:
        self.main_file = main_file
        self.sections = sections
        self.problems = problems
        self.notes: list[Problem] = []
        self.entries: dict[str, _Entry] = {}
        self.docs: dict[str, Document] = {}  # real path -> parsed document
        # real path -> the entries that reading it merged (its includes' too), once each,
        # in the order of their last merge: including it again replays these
        self.merged: dict[str, list[_Entry]] = {}
        self.log: list[_Entry] = []  # every entry merged by read(), in order
        self.nodes = 0  # values read so far, aliases expanded, in all files (MAX_CONFIG_NODES)
        self.files: list[str] = []
        self.yaml_spots: set[tuple[str, int, int]] = set()  # (file, line, col) of YAML-level errors
        self.sources = _Sources(main_file)

    # -- reading and merging ------------------------------------------------------------

    def at(self, doc: Document, file_path: tuple[Hashable, ...], message: str, *,
           shown: tuple[Hashable, ...] = (), warning: bool = False, at_key: bool = False) -> None:
        """Record a problem located in ``doc`` at ``file_path``, shown with path ``shown``."""
        loc = doc.locate(file_path, at_key=at_key)
        self.problems.append(Problem(format_path(shown), message, loc.file, loc.line, loc.col, warning))

    def read(self, file: str, stack: tuple[str, ...]) -> None:
        """Read ``file`` and merge its keys; raises OSError when it cannot be read.

        A file is read, parsed and walked once: including it again replays the entries
        it merged the first time (so a file included twice by each of a chain of files
        costs one replay per include, not twice the work per level).
        """
        real = os.path.realpath(file)
        replay = self.merged.get(real)
        if replay is not None:
            for entry in replay:
                self.merge(entry)
                self.log.append(entry)
            return
        doc = read_document(file, max_nodes=MAX_CONFIG_NODES - self.nodes)
        self.nodes += doc.nodes
        self.docs[real] = doc
        self.files.append(file)
        self.problems.extend(doc.problems)
        self.yaml_spots.update((p.file, p.line, p.col) for p in doc.problems if not p.warning)
        start = len(self.log)
        self.walk(doc, (*stack, real))
        last: dict[tuple[int, Any], _Entry] = {}
        for entry in self.log[start:]:
            last.pop((id(entry.doc), entry.orig), None)
            last[(id(entry.doc), entry.orig)] = entry
        self.merged[real] = list(last.values())

    def walk(self, doc: Document, stack: tuple[str, ...]) -> None:
        """Merge the keys of a document just read, following its includes."""
        value = doc.value
        if value is None:
            return
        if not isinstance(value, dict):
            # the kind only, never the content: an included file that is no config (a token
            # file, a .env) must not be echoed into the log
            kind = ("a list" if isinstance(value, list) else "text" if isinstance(value, str)
                    else "a boolean" if isinstance(value, bool) else "a number" if isinstance(value, (int, float))
                    else type(value).__name__)
            self.at(doc, (), f"a config file must be a mapping of section names, not {kind} (is it a config file?)")
            return
        for key, item in value.items():
            if key == "include":
                self.include(doc, item, stack)
                continue
            if not isinstance(key, str):
                self.at(doc, (key,), f"section names must be strings, not {show(key)}", at_key=True)
                continue
            entry = self.classify(doc, key, item)
            if entry is not None:
                self.merge(entry)
                self.log.append(entry)

    def include(self, doc: Document, value: Any, stack: tuple[str, ...]) -> None:
        """Follow an ``include`` value of ``doc``."""
        if isinstance(value, str):
            items: list[tuple[tuple[Hashable, ...], Any]] = [(("include",), value)]
        elif isinstance(value, list):
            items = [(("include", i), v) for i, v in enumerate(value)]
        else:
            self.at(doc, ("include",), f"must be a file path or a list of file paths, not {show(value)}",
                    shown=("include",))
            return
        for where, item in items:
            if not isinstance(item, str) or not item.strip():
                self.at(doc, where, f"must be a file path, not {show(item)}", shown=where)
                continue
            target = os.path.expanduser(item)
            if not os.path.isabs(target):
                target = os.path.normpath(os.path.join(os.path.dirname(doc.file), target))
            real = os.path.realpath(target)
            name = show(item) if isinstance(item, Secret) else repr(target)  # a path from !env stays unshown
            if real in stack:
                names = [self.shown_name(r) for r in stack[stack.index(real):]]
                self.at(doc, where, f"include cycle: {' -> '.join([*names, names[0]])}", shown=where)
                continue
            if real not in self.merged:
                if self.nodes > MAX_CONFIG_NODES:
                    return  # the file that spent the budget is reported; reading more adds nothing
                if len(stack) > MAX_INCLUDE_DEPTH:
                    self.at(doc, where, f"includes nested more than {MAX_INCLUDE_DEPTH} deep (the most a config "
                                        f"may nest them): {name} would be at depth {len(stack)}", shown=where)
                    continue
                if len(self.files) >= MAX_CONFIG_FILES:
                    self.at(doc, where, f"{name} would be file {len(self.files) + 1} of the config; "
                                        f"a config may be made of at most {MAX_CONFIG_FILES} files", shown=where)
                    continue
            try:
                self.read(target, stack)
            except OSError as e:
                self.at(doc, where, f"cannot read included file {name}: {(e.strerror or str(e)).lower()}",
                        shown=where)

    def shown_name(self, real: str) -> str:
        """The file name as first opened, for a real path."""
        doc = self.docs.get(real)
        return doc.file if doc is not None else real

    def classify(self, doc: Document, key: str, value: Any) -> _Entry | None:
        """Say what a top-level key is, mapping Platypush names; None when unusable."""
        if key in CORE_KEYS:
            return _Entry(key, key, "core", value, doc)
        if key.startswith(_HOOK_PREFIX) or key == _HOOK_PREFIX[:-1]:
            name = key[len(_HOOK_PREFIX):]
            if not name:
                self.at(doc, (key,), f"hook {key!r} needs a name: event.hook.NAME", at_key=True)
                return None
            return _Entry(key, key, "hook", value, doc)
        if key.startswith(_PROCEDURE_PREFIX):
            try:
                name, _, _ = parse_procedure_key(key)
            except ValueError as e:
                self.at(doc, (key,), str(e), at_key=True)
                return None
            return _Entry(_PROCEDURE_PREFIX + name, key, "procedure", value, doc)
        if key.startswith(_CRON_PREFIX):
            return _Entry(key, key, "cron", value, doc)
        if key in UNSUPPORTED_SECTIONS:
            self.at(doc, (key,), f"section {key!r}: {UNSUPPORTED_SECTIONS[key]}", at_key=True)
            return None
        new = LEGACY_SECTIONS.get(key)
        if new is None and key.startswith(_LEGACY_SENSOR_PREFIX) and len(key) > len(_LEGACY_SENSOR_PREFIX):
            new = "sensor." + key[len(_LEGACY_SENSOR_PREFIX):]
        if new is None:
            return _Entry(key, key, "section", value, doc)
        if self.sections is not None and new not in self.sections:
            self.at(doc, (key,), _no_counterpart(key, new), at_key=True)
            return None
        if key in SPLIT_SECTIONS.get(new, ()):
            advice = f"move its options into one {new!r} section"
        else:
            advice = f"rename it to {new!r}"
        self.at(doc, (key,), f"platypush section {key!r} is read as {new!r}; {advice}", warning=True,
                at_key=True)
        return _Entry(new, key, "section", value, doc)

    def merge(self, entry: _Entry) -> None:
        """Add an entry; a later one with the same meaning replaces the earlier one.

        Spellings of one of the :data:`SPLIT_SECTIONS` are joined instead (see :meth:`join`).
        """
        prev = self.entries.get(entry.canon)
        if prev is not None and entry.kind == "section" and self.join(prev, entry):
            return
        self.entries.pop(entry.canon, None)
        if prev is not None and not (prev.doc is entry.doc and prev.orig == entry.orig):
            before = prev.doc.locate((prev.orig,), at_key=True)
            if prev.doc is entry.doc:
                self.at(entry.doc, (entry.orig,), f"{entry.canon!r} is defined twice in this file, also as "
                        f"{prev.orig!r} at line {before.line}, col {before.col}", shown=(entry.canon,),
                        at_key=True)
            else:
                self.at(entry.doc, (entry.orig,), f"also defined at {before.file}:{before.line}:{before.col}; "
                        f"this later definition replaces it", shown=(entry.canon,), warning=True,
                        at_key=True)
        self.entries[entry.canon] = entry

    def join(self, prev: _Entry, entry: _Entry) -> bool:
        """Merge ``entry`` into ``prev`` when both are spellings of one split section.

        A spelling given again in a later file replaces its earlier part (with the usual
        warning); a key set by two spellings to different values is an error located at
        the later one and naming the earlier one; the same value twice is fine.

        Returns:
            False when the two are not parts of one :data:`SPLIT_SECTIONS` entry (the
            caller then handles them as two definitions of one key).
        """
        allowed = SPLIT_SECTIONS.get(entry.canon, frozenset())
        parts = prev.parts or [prev]
        if entry.orig not in allowed or any(p.orig not in allowed for p in parts):
            return False
        if all(p.orig == entry.orig for p in parts):
            return False  # one spelling twice: an override, not a join
        kept = []
        for part in parts:
            if part.orig == entry.orig and part.doc is entry.doc:
                continue  # the same file included again: its entries are merged again, silently
            if part.orig == entry.orig:
                before = part.doc.locate((part.orig,), at_key=True)
                self.at(entry.doc, (entry.orig,), f"also defined at {before.file}:{before.line}:{before.col}; "
                        f"this later definition replaces it", shown=(entry.canon,), warning=True, at_key=True)
            else:
                kept.append(part)
        names = self._option_names(entry.canon)
        merged: dict[Any, Any] = {}
        owner: dict[Hashable, _Entry] = {}  # key as written -> the part that set it
        written: dict[Any, Any] = {}  # option name -> the key as written where it was set
        for part in [*kept, entry]:
            body = part.value
            if body is None:
                continue
            if not isinstance(body, dict):
                if part is entry or not prev.parts:  # joined parts were reported when first joined
                    self.at(part.doc, (part.orig,), f"must be a mapping of options, not {show(body)}",
                            shown=(entry.canon,))
                continue
            for key, value in body.items():
                name = names.get(key, key) if hashable(key) else key
                if name not in written:
                    merged[key], owner[key], written[name] = value, part, key
                    continue
                old_key = written[name]
                if part is not entry or merged[old_key] == value:
                    continue  # earlier parts were compared with each other when they were joined
                first = owner[old_key]
                there = first.doc.locate((first.orig, old_key), at_key=True)
                spelt = f" (as {old_key!r})" if old_key != key else ""
                self.at(entry.doc, (entry.orig, key),
                        f"{key!r} is {show(value)} here but {show(merged[old_key])}{spelt} in "
                        f"{first.orig!r} at {there.file}:{there.line}:{there.col}; both sections are read "
                        f"as {entry.canon!r}, so set it in one of them", shown=(entry.canon, key), at_key=True)
        head = kept[0] if kept else entry
        self.entries[entry.canon] = _Entry(entry.canon, head.orig, "section", merged, head.doc,
                                           parts=[*kept, entry], owner=owner)
        return True

    def _option_names(self, section: str) -> dict[Hashable, str]:
        """Old name -> name of every aliased option of ``section`` (empty without a schema)."""
        schema = self.sections.get(section) if self.sections is not None else None
        if schema is None:
            return {}
        return {alias: name for name, f in schema.fields.items() for alias in f.aliases}

    # -- interpreting -------------------------------------------------------------------

    def report(self, problems: list[ConfigProblem]) -> None:
        """Locate problems whose paths start with a merged top-level key.

        A problem at the very spot of a YAML-level error (a missing ``!env`` variable,
        an unknown tag) is dropped: the value there is a None stand-in, and "must be an
        int, not null" would only repeat the first error.
        """
        for p in problems:
            located = self.sources.from_config_problem(p)
            if (located.file, located.line, located.col) not in self.yaml_spots:
                self.problems.append(located)

    def flags(self, entry: _Entry, disabled: set[str]) -> Any:
        """Apply ``disabled``/``enabled``; return the body without them, or _DROP.

        A section whose schema declares ``enabled`` or ``disabled`` as an option of its
        own gets that key untouched (e.g. ``shell: {enabled: true}`` opts in to running
        programs); the other flag keeps its generic meaning.
        """
        body = entry.value
        schema = self.sections.get(entry.canon) if self.sections is not None and entry.kind == "section" else None
        own = set(schema.fields) if schema is not None else set()
        generic = {"disabled", "enabled"} - own
        if not isinstance(body, dict) or not (generic & body.keys()):
            return body
        ok = True
        for flag in sorted(generic):
            if flag in body and not isinstance(body[flag], bool):
                self.problems.append(self.sources.problem(
                    (entry.canon, flag), f"must be true or false, not {show(body[flag])}"))
                ok = False
        if not ok:
            return _DROP
        if "disabled" in generic and body.get("disabled") is True:
            loc = entry.doc.locate((entry.orig,), at_key=True)
            self.notes.append(Problem(entry.canon, "disabled (disabled: true); skipped", loc.file, loc.line,
                                      loc.col, warning=True))
            return _DROP
        if "enabled" in generic and body.get("enabled") is False:
            disabled.add(entry.canon)
        return {k: v for k, v in body.items() if k not in generic}

    def build(self) -> Config:
        """Interpret the merged entries into a :class:`Config`."""
        for entry in self.entries.values():
            self.sources.add(entry)
        core: dict[str, Any] = {}
        hooks: list[HookSpec] = []
        procedures: list[ProcedureSpec] = []
        sections: dict[str, dict[str, Any]] = {}
        crons: dict[str, Any] = {}
        disabled: set[str] = set()
        for entry in self.entries.values():
            if entry.kind == "core":
                core[entry.canon] = self.core(entry)
                continue
            if entry.kind == "procedure":
                spec = self.procedure(entry)
                if spec is not None:
                    procedures.append(spec)
                continue
            body = self.flags(entry, disabled)
            if body is _DROP:
                continue
            if entry.kind == "hook":
                hook = self.hook(entry, body, entry.canon not in disabled)
                if hook is not None:
                    hooks.append(hook)
            elif entry.kind == "cron":
                self.problems.append(self.sources.problem(
                    (), f"cron jobs are not supported yet; {entry.canon!r} is kept aside and will not run",
                    warning=True, key=entry.canon))
                crons[entry.canon] = body
            else:
                section = self.section(entry, body)
                if section is not None:
                    sections[entry.canon] = section
        logging = core.get("logging") or LOGGING_SCHEMA.validate({}, ("logging",))[0]
        return Config(
            device_id=core.get("device_id") or socket.gethostname(),
            token=core.get("token"),
            workdir=core.get("workdir") or _default_workdir(),
            environment=core.get("environment") or {},
            constants=core.get("constants") or {},
            logging=logging,
            hooks=hooks,
            procedures=procedures,
            sections=sections,
            disabled=disabled,
            files=list(self.files),
            warnings=_sorted([p for p in self.problems if p.warning], self.files),
            notes=_sorted(self.notes, self.files),
            crons=crons,
            _sources=self.sources,
        )

    def core(self, entry: _Entry) -> Any:
        """Validate one of the :data:`CORE_KEYS` (``include`` never gets here)."""
        key, value = entry.canon, entry.value
        path = (key,)
        if value is None:
            return None
        if key == "device_id":
            if isinstance(value, str) and value.strip():
                return value
            self.problems.append(self.sources.problem(path, f"must be a non-empty string, not {show(value)}"))
            return None
        if key == "token":
            if isinstance(value, str):
                return value if isinstance(value, Secret) else Secret(value)
            self.problems.append(self.sources.problem(path, f"must be a string, not {show(value, True)}"))
            return None
        if key == "workdir":
            if not isinstance(value, str) or not value.strip():
                self.problems.append(self.sources.problem(path, f"must be a directory path, not {show(value)}"))
                return None
            target = os.path.expanduser(value)
            return target if os.path.isabs(target) else os.path.join(os.path.dirname(entry.doc.file), target)
        if key == "environment":
            out, problems = coerce(dict_of((str, int, float)), value, path)
            self.report(problems)
            if problems:
                return None
            return {k: v if isinstance(v, str) else str(v) for k, v in out.items()}
        if key == "constants":
            out, problems = coerce(dict[str, object], value, path)
            self.report(problems)
            return None if problems else out
        # logging
        if isinstance(value, dict) and isinstance(value.get("level"), str):
            level = value["level"]
            # str methods drop the Secret wrapper; a level from !env must stay unshown
            value = {**value, "level": Secret(level.upper()) if isinstance(level, Secret) else level.upper()}
        out, problems = LOGGING_SCHEMA.validate(value, path)
        self.report(problems)
        return None if any(not getattr(p, "warning", False) for p in problems) else out

    def hook(self, entry: _Entry, body: Any, enabled: bool) -> HookSpec | None:
        """Validate an ``event.hook.NAME`` body."""
        path = (entry.canon,)
        if body is None:
            self.problems.append(self.sources.problem(path, "must be a mapping with 'if' and 'then', not null"))
            return None
        out, problems = HOOK_SCHEMA.validate(body, path)
        self.report(problems)
        if any(not getattr(p, "warning", False) for p in problems):
            return None
        then = out["then"]
        return HookSpec(name=entry.canon[len(_HOOK_PREFIX):], if_=out["if"],
                        then=[then] if isinstance(then, dict) else then,
                        priority=out["priority"], path=path, enabled=enabled)

    def procedure(self, entry: _Entry) -> ProcedureSpec | None:
        """Validate a ``procedure...`` body (a list of steps)."""
        path = (entry.orig,)
        if not isinstance(entry.value, list):
            self.problems.append(self.sources.problem(path, f"must be a list of steps, not {show(entry.value)}"))
            return None
        name, params, is_async = parse_procedure_key(entry.orig)
        return ProcedureSpec(key=entry.orig, name=name, params=params, is_async=is_async,
                             steps=entry.value, path=path)

    def section(self, entry: _Entry, body: Any) -> dict[str, Any] | None:
        """Validate a section body with its schema."""
        path = (entry.canon,)
        if self.sections is None:
            if body is None:
                return {}
            if isinstance(body, dict):
                return body
            self.problems.append(self.sources.problem(path, f"must be a mapping of options, not {show(body)}"))
            return None
        schema = self.sections.get(entry.canon)
        if schema is None:
            written = f" (written {entry.orig!r})" if entry.orig != entry.canon else ""
            hint = _suggest_key(entry.canon, self.sections)
            self.problems.append(self.sources.problem(
                (), f"unknown section {entry.canon!r}{written}{hint}", key=entry.canon))
            return None
        out, problems = schema.validate(body, path)
        self.report(problems)
        return None if any(not getattr(p, "warning", False) for p in problems) else out


_DROP: Final = object()  # an entry removed by ``disabled: true`` or bad flags


def _no_counterpart(key: str, new: str) -> str:
    """The error for a Platypush section whose pihub section is not installed."""
    if key.startswith(_LEGACY_SENSOR_PREFIX) and key not in LEGACY_SECTIONS:
        sensors = ", ".join(f"{new_name!r} (for {old!r})" for old, new_name in LEGACY_SECTIONS.items()
                            if old.startswith(_LEGACY_SENSOR_PREFIX))
        return (f"platypush section {key!r} has no pihub counterpart: pihub's sensor sections are {sensors}; "
                f"remove it, or install a package that provides a {new!r} backend")
    return (f"platypush section {key!r} would be read as {new!r}, but no installed backend provides "
            f"{new!r}; remove it, or install a package that provides a {new!r} backend")


def _suggest_key(key: str, sections: Mapping[str, Schema]) -> str:
    """A did-you-mean hint for an unknown top-level key, including misspelled prefixes."""
    for prefix in (_HOOK_PREFIX, _PROCEDURE_PREFIX, _CRON_PREFIX):
        n = prefix.count(".")
        parts = key.split(".", n)
        if len(parts) == n + 1 and parts[-1]:
            head = ".".join(parts[:n]) + "."
            if head != prefix and close_matches(head, [prefix], n=1):
                return f" (did you mean {prefix + parts[-1]!r}?)"
    return suggest(key, [*CORE_KEYS, *sections])


def _sorted(problems: list[Problem], files: list[str]) -> list[Problem]:
    """Problems in file order (as read), then line and column."""
    order = {f: i for i, f in enumerate(files)}
    return sorted(problems, key=lambda p: (order.get(p.file, -1), p.line, p.col))


def load(path: str | None = None, *, sections: Mapping[str, Schema] | None = None) -> Config:
    """Find, read, merge and validate the configuration.

    Args:
        path: the config file; None searches (see the module docstring).
        sections: the schema of every section pihub knows (plugins and backends), by
            section name. Every other non-core key is an unknown-section error. None
            accepts every section unvalidated (raw mappings), for tools that only need
            hooks and procedures; the hub MUST pass its registry.

    Returns:
        The configuration, with its warnings in :attr:`Config.warnings`.

    Raises:
        ConfigNotFound: no config file exists (or the named one does not).
        ConfigUnreadable: the main file exists but cannot be read.
        ConfigError: the configuration has errors; ``problems`` holds all of them,
            located and sorted by file and position, and ``warnings`` the warnings.
            Its ``config`` attribute is the :class:`Config` built from the valid
            parts only (entries with errors are left out), so that a caller such as
            ``pihub check-config`` can compile those and report every error at once;
            it MUST NOT be run.
    """
    problems: list[Problem] = []
    main = _find(path, problems)
    loader = _Loader(main, sections, problems)
    try:
        loader.read(main, ())
    except OSError as e:
        raise ConfigUnreadable(f"cannot read config file {main!r}: {(e.strerror or str(e)).lower()}",
                               filename=main) from e
    config = loader.build()
    if any(not p.warning for p in problems):
        # the config lets check-config go on compiling the valid hooks and procedures, so
        # that their errors are reported together with these
        raise ConfigError(_sorted(problems, loader.files), config=config)
    return config
