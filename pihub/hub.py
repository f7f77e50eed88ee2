"""The hub: builds everything from the config, starts it, stops it in reverse.

This is the only module that knows all the others. Start order: worker pool ->
dispatcher -> backends (producers last), then ``ApplicationStartedEvent``. Stop order is
the reverse: ``ApplicationStoppingEvent`` (its hooks run while backends are still open),
backends close (no new events), the dispatcher drains the ring, the pool runs what was
queued, the store closes. Nothing accepted by the bus is lost on a clean stop.

A backend that fails (missing library or device, bad config, error while opening) is
marked failed with the reason, a ``BackendStatusEvent`` is published, and the hub runs on.
One that runs but retries a missing device reports ``degraded`` (and ``running`` again when
it is back); the hub publishes a ``BackendStatusEvent`` for each change.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pihub import __version__
from pihub.auth import Auth
from pihub.backends.base import Backend, BackendStatus, RequestChannel
from pihub.bus import Bus, ProducerStats
from pihub.clock import SYSTEM, Clock
from pihub.config import Config, Schema
from pihub.engine.actions import ActionRegistry
from pihub.engine.dispatcher import DEFAULT_INLINE_BUDGET, Dispatcher, DispatchStats, WorkerPool, inline_hooks
from pihub.engine.hooks import Hook
from pihub.engine.procedures import Procedure, Runner, compile_steps, iter_action_steps, procedure_name
from pihub.engine.rules import Matcher
from pihub.errors import BackendUnavailable, ConfigError, ConfigProblem, ConfigProblems, Problem, did_you_mean
from pihub.events import CATALOGUE, Event, Reply
from pihub.ingress import RequestGate
from pihub.messages import Request, Response
from pihub.plugin import Plugin
from pihub.plugins.event import EventPlugin
from pihub.plugins.logger import LoggerPlugin
from pihub.plugins.shell import ShellPlugin
from pihub.plugins.variable import VariablePlugin
from pihub.replay import LiveTraces
from pihub.store import Store
from pihub.web import HTTP_SCHEMA
from pihub.web.dashboards import DASHBOARDS_SCHEMA

if TYPE_CHECKING:
    from pihub.web.camera import CameraSource

log = logging.getLogger("pihub.hub")

BACKEND_GROUP = "pihub.backends"

#: Built-in plugin classes, configurable by a section of their name.
PLUGIN_CLASSES: dict[str, type[Plugin]] = {
    "variable": VariablePlugin,
    "logger": LoggerPlugin,
    "event": EventPlugin,
    "shell": ShellPlugin,
}

#: Sections of the engine itself (not plugins or backends).
ENGINE_SECTIONS = ("engine", "http", "dashboards")


def engine_schema() -> Schema:
    from pihub.config import Field

    return Schema(
        {
            "workers": Field(int, default=4, min=1, max=64, doc="threads running hook actions"),
            "queue_size": Field(int, default=1024, min=1, max=1_000_000, doc="hook jobs waiting at most"),
            "ring_capacity": Field(int, default=4096, min=2, max=1 << 24,
                                   doc="events per producer ring (rounded up to a power of two)"),
            "batch_size": Field(int, default=256, min=1, max=65536, doc="events popped per native call"),
            "inline_budget": Field(float, default=DEFAULT_INLINE_BUDGET, min=1e-6, max=1.0,
                                   doc="seconds of non-blocking hooks one batch may run on the dispatcher "
                                       "thread before its other hooks go to the workers"),
            "overflow_check": Field(float, default=0.5, min=0.01, max=60.0,
                                    doc="seconds between checks of the bus drop counters (BusOverflowEvent)"),
        },
        doc="Engine tuning.",
    )


#: pihub's own backends: section name -> "module:Class". Imported on first use; their
#: modules import their hardware libraries lazily, so listing them costs nothing.
BUILTIN_BACKENDS: dict[str, str] = {
    "mock": "pihub.backends.mock:MockBackend",
    "gpio": "pihub.backends.gpio:GpioBackend",
    "serial": "pihub.backends.serial_sensor:SerialSensorBackend",
    "adc": "pihub.backends.adc:AdcBackend",
    "flic": "pihub.backends.flic:FlicBackend",
    "smartcard": "pihub.backends.smartcard:SmartCardBackend",
    "midi": "pihub.backends.midi:MidiBackend",
    "file_watch": "pihub.backends.file_watch:FileWatchBackend",
    "rss": "pihub.backends.rss:RssBackend",
    "camera.pi": "pihub.backends.camera:CameraBackend",
    "mqtt": "pihub.backends.mqtt:MqttBackend",
    "tcp": "pihub.backends.tcp:TcpBackend",
    "redis_queue": "pihub.backends.redis_queue:RedisQueueBackend",
    "music.mpd": "pihub.backends.mpd:MpdBackend",
}


def _load_class(spec: str) -> type[Backend]:
    module, _, name = spec.partition(":")
    cls: type[Backend] = getattr(importlib.import_module(module), name)
    return cls


def backend_classes(*, third_party: bool = True, only: Iterable[str] | None = None) -> dict[str, type[Backend]]:
    """Backend classes by section name: pihub's own, then (with ``third_party``) those
    other packages register under the ``pihub.backends`` entry-point group.

    Scanning entry points imports ``importlib.metadata`` (~5 MB of RSS on a Pi), so the
    hub does it only when the config names a section pihub itself does not know. With
    ``only``, just those of pihub's own are imported: a backend module is part of the
    daemon's resident set only when its section is configured (13 modules: ~1.5 MiB).
    """
    wanted = BUILTIN_BACKENDS if only is None else {n: BUILTIN_BACKENDS[n] for n in only if n in BUILTIN_BACKENDS}
    out: dict[str, type[Backend]] = {name: _load_class(spec) for name, spec in wanted.items()}
    if third_party:
        import importlib.metadata

        for ep in importlib.metadata.entry_points(group=BACKEND_GROUP):
            if ep.name in out:
                continue
            try:
                out[ep.name] = ep.load()
            except Exception as e:  # a broken third-party backend must not take the daemon down
                log.error("backend %s could not be loaded: %s", ep.name, e)
    return out


class _SectionSchemas(Mapping[str, Schema]):
    """Section name -> schema. A built-in backend's module is imported when its section is
    looked up; third-party backends are looked up only on a miss (or to list them all)."""

    def __init__(self) -> None:
        self._schemas: dict[str, Schema] = {"engine": engine_schema(), "http": HTTP_SCHEMA,
                                            "dashboards": DASHBOARDS_SCHEMA}
        for name, cls in PLUGIN_CLASSES.items():
            self._schemas[name] = cls.config_schema or Schema({}, extra=True)
        self._complete = False

    def _add(self, classes: Mapping[str, type[Backend]]) -> None:
        for name, cls in classes.items():
            self._schemas.setdefault(name, cls.config_schema or Schema({}, extra=True))

    def _all(self) -> dict[str, Schema]:
        if not self._complete:
            self._complete = True
            self._add(backend_classes(third_party=True))
        return self._schemas

    def __getitem__(self, name: str) -> Schema:
        if name in self._schemas:
            return self._schemas[name]
        if name in BUILTIN_BACKENDS:
            self._add(backend_classes(third_party=False, only=(name,)))
            return self._schemas[name]
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


def known_sections() -> Mapping[str, Schema]:
    """Every config section pihub accepts, with its schema (lazy for third-party ones)."""
    return _SectionSchemas()


def _collect(errs: list[ConfigProblem], compile_fn: Callable[..., Any], *args: Any) -> Any:
    """``compile_fn(*args)``, or None with its ConfigProblem(s) appended to ``errs``."""
    try:
        return compile_fn(*args)
    except ConfigProblems as e:
        errs.extend(e.problems)
    except ConfigProblem as e:
        errs.append(e)
    return None


def _construct(cls: type[Backend], values: Mapping[str, Any], clock: Clock, store: Store | None = None) -> Backend:
    """``cls(values, clock=clock)``; without the clock for a third-party backend whose
    ``__init__`` does not take one (it then runs on the system clock). A backend whose
    ``__init__`` takes ``store`` (rss: the entries it has seen) gets the hub's store."""
    try:
        params = set(inspect.signature(cls).parameters)
    except (TypeError, ValueError):  # no signature to read: assume the base's
        params = {"clock"}
    kwargs: dict[str, Any] = {"clock": clock} if "clock" in params else {}
    if "store" in params and store is not None:
        kwargs["store"] = store
    return cls(values, **kwargs)


class Hub:
    """The running daemon's object graph.

    Args:
        config: a loaded :class:`pihub.config.Config`.
        with_backends: False builds plugins, procedures and hooks only (``pihub exec``
            of non-hardware actions, replay).
        clock: the time of every backend (:mod:`pihub.clock`); the system clock when None.

    Raises:
        ConfigError: for every hook, procedure or section that does not compile,
            located in the config files.
    """

    def __init__(self, config: Config, *, with_backends: bool = True, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = SYSTEM if clock is None else clock
        self.device_id = config.device_id
        eng = config.sections.get("engine") or engine_schema().validate({}, ("engine",))[0]
        self.bus = Bus(capacity=eng["ring_capacity"], max_producers=256)
        self.pool = WorkerPool(eng["workers"], eng["queue_size"])
        self.registry = ActionRegistry()
        workdir = Path(config.workdir)
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.store = Store(workdir / "pihub.db")
        # the env token is taken out of the environment so shell actions' children never see it
        self.auth = Auth(self.store, env_token=os.environ.pop("PIHUB_API_TOKEN", None), config_token=config.token)
        #: requests from raw channels (TCP, Redis, MQTT), authenticated like HTTP's
        self.gate = RequestGate(self, self.auth, self.clock)
        # _mp: Hub.publish runs on HTTP workers, action workers, backend status listeners and
        # the thread calling start/stop, concurrently
        self._hub_producer = self.bus.producer("hub", shared=True)
        self.backends: dict[str, Backend] = {}
        #: when set, :meth:`publish` hands events to it instead of the bus (pihub replay).
        self.publish_sink: Callable[[Event], bool] | None = None
        self._started = False
        #: ``self.clock.now()`` at :meth:`start` (``uptime_s`` of :meth:`status`).
        self._started_at: float | None = None
        self._lock = threading.Lock()

        problems: list[Problem] = []
        self._build_plugins(problems)
        if with_backends:
            self._build_backends(problems)
        self.procedures: dict[str, Procedure] = {}
        self._build_procedures(problems)
        self.runner = Runner(self._execute_step, self._spawn, clock=self.clock)
        self.registry.set_procedure_caller(self.call_procedure)
        self.hooks: list[Hook] = self._build_hooks(problems)
        self._check_actions(problems)
        if any(not p.warning for p in problems):
            self.auth.close()
            self.store.close()
            self.bus.close()
            raise ConfigError(problems + list(config.warnings))
        self.matcher = Matcher(self.hooks)
        self.dispatcher = Dispatcher(self.bus, self.matcher, self._fire, self.pool,
                                     batch_size=eng["batch_size"], overflow_check=eng["overflow_check"],
                                     inline=inline_hooks(self.hooks, self.registry.is_blocking),
                                     inline_budget=eng["inline_budget"], clock=self.clock)
        self.http: dict[str, Any] = config.sections.get("http") or HTTP_SCHEMA.validate({}, ("http",))[0]
        self.web: Any = None   # pihub.web.server.WebServer while serving
        self.live: Any = None  # pihub.web.live.LiveServer while serving
        #: recent events' hook traces and per-hook counts (the panel; :meth:`trace`)
        self.traces = LiveTraces(max(1, self.http["websocket_replay"]),
                                 max_bytes=self.http["websocket_replay_bytes"])

    # ------------------------------------------------------------------ build
    def _build_plugins(self, problems: list[Problem]) -> None:
        sections = self.config.sections
        for name, cls in PLUGIN_CLASSES.items():
            kwargs = dict(sections.get(name) or {})
            plugin: Plugin
            if name == "variable":
                plugin = VariablePlugin(self.store, self.publish)
            elif name == "event":
                plugin = EventPlugin(self.publish)
            else:
                plugin = cls(**kwargs)
            if name in self.config.disabled:
                self.registry.register(plugin, enabled=False)
            else:
                self.registry.register(plugin)

    def _build_backends(self, problems: list[Problem]) -> None:
        own = set(BUILTIN_BACKENDS) | set(PLUGIN_CLASSES) | set(ENGINE_SECTIONS)
        classes = backend_classes(third_party=any(name not in own for name in self.config.sections),
                                  only=self.config.sections)
        for name, values in self.config.sections.items():
            cls = classes.get(name)
            if cls is None:
                continue
            if name in self.config.disabled:
                log.info("backend %s is disabled in the config", name)
                continue
            errs: list[ConfigProblem] = []
            try:
                backend = _collect(errs, _construct, cls, values, self.clock, self.store)
            except (ValueError, TypeError, KeyError) as e:  # a backend that raised a plain error
                problems.append(self.config.problem((name,), str(e)))
                continue
            if errs:
                problems.extend(self._locate((name,), errs))
                continue
            if backend is None:
                continue
            self.backends[name] = backend
            self.registry.register(backend)

    def _build_procedures(self, problems: list[Problem]) -> None:
        for spec in self.config.procedures:
            errs: list[ConfigProblem] = []
            steps = _collect(errs, compile_steps, spec.steps, ())
            if errs:
                problems.extend(self._locate(spec.path, errs))
                continue
            if spec.name in self.procedures:
                problems.append(self.config.problem(spec.path, f"procedure {spec.name!r} is defined twice"))
            self.procedures[spec.name] = Procedure(spec.name, tuple(spec.params), steps, spec.is_async)

    def _build_hooks(self, problems: list[Problem]) -> list[Hook]:
        from pihub.engine.conditions import compile_condition

        hooks = []
        self._hook_paths: dict[str, tuple[Any, ...]] = {}
        for order, spec in enumerate(self.config.hooks):
            if not spec.enabled:
                log.info("hook %s is disabled in the config", spec.name)
                continue
            errs: list[ConfigProblem] = []
            cond = _collect(errs, compile_condition, spec.if_, ("if",), spec.name)
            steps = _collect(errs, compile_steps, spec.then, ("then",))
            hook: Hook | None = (None if errs
                                 else _collect(errs, Hook, spec.name, cond, steps, spec.priority, order))
            if hook is None:  # errs says why
                problems.extend(self._locate(spec.path, errs))
                continue
            hooks.append(hook)
            self._hook_paths[spec.name] = tuple(spec.path)
        return hooks

    def _check_actions(self, problems: list[Problem]) -> None:
        """Report actions that name no plugin/action/procedure, before anything runs."""
        bodies: list[tuple[tuple[Hashable, ...], Any]] = [
            (tuple(spec.path), self.procedures[spec.name].steps)
            for spec in self.config.procedures if spec.name in self.procedures]
        bodies += [(self._hook_paths[hook.name], hook.then) for hook in self.hooks]
        for base, steps in bodies:
            for step in iter_action_steps(steps):
                if step.action_template is not None:
                    continue  # a ${...} action name is only known when it runs
                path = base + tuple(step.path) + ("action",)
                if step.action.startswith("procedure."):
                    name = procedure_name(step.action)
                    if name not in self.procedures:
                        hint = did_you_mean(name, self.procedures, n=1)
                        problems.append(self.config.problem(path, f"no such procedure {name!r}{hint}"))
                    continue
                error = self.registry.check(step.action)
                if error:
                    plugin = step.action.rpartition(".")[0]
                    problems.append(self.config.problem(path, error, warning=plugin in self.config.disabled))

    def _locate(self, base: tuple[Hashable, ...], errs: Iterable[ConfigProblem]) -> list[Problem]:
        return [self.config.located(e, tuple(base)) for e in errs]

    # ------------------------------------------------------------- lifecycle
    def start(self, *, serve_web: bool = True) -> None:
        """Start pool, web, dispatcher, then backends; publish ``ApplicationStartedEvent``.

        Args:
            serve_web: False keeps the HTTP and websocket servers off (``pihub exec``).
        """
        with self._lock:
            if self._started:
                return
            self._started = True
            self._started_at = self.clock.now()
        self.pool.start()
        if serve_web:
            self._build_web()
        self.dispatcher.start()
        if self.web is not None:
            self.web.start()
            log.info("HTTP API on %s", self.web.url)
        if self.live is not None:
            if self.web is not None:  # the port bound (http.port 0: known only now) is the panel's origin
                self.live.http_port = self.web.port
            self.live.start()
            log.info("websocket on port %d", self.live.port)
        for name, backend in self.backends.items():
            self._open_backend(name, backend)
        self.publish(Event(CATALOGUE.get("ApplicationStartedEvent"), {}, time.monotonic_ns(), "hub"))
        log.info("pihub started: %d hooks, %d procedures, backends: %s", len(self.hooks),
                 len(self.procedures),
                 ", ".join(f"{n} ({b.status})" for n, b in self.backends.items()) or "none")

    def _build_web(self) -> None:
        """Create the HTTP and websocket servers from the ``http`` section (not started)."""
        http = self.http
        if not http["enabled"] or "http" in self.config.disabled:
            return
        from pihub.web.app import SESSION_COOKIE, make_app
        from pihub.web.server import WebServer, make_ssl_context

        if http["run_externally"]:
            log.info("HTTP API not served here (http.run_externally): serve "
                     "pihub.web.app.make_app(hub) from your WSGI server")
        else:
            self.web = WebServer(make_app(self), host=http["bind_address"], port=http["port"],
                                 threads=http["threads"], ssl_cert=http["ssl_cert"], ssl_key=http["ssl_key"],
                                 ssl_cafile=http["ssl_cafile"], ssl_capath=http["ssl_capath"])
        if not http["disable_websocket"]:
            from pihub.web.live import LiveServer

            ssl_ctx = (make_ssl_context(http["ssl_cert"], http["ssl_key"], http["ssl_cafile"],
                                        http["ssl_capath"]) if http["ssl_cert"] else None)
            self.live = LiveServer(
                self, self.auth, host=http["bind_address"], port=http["websocket_port"],
                max_frame=http["max_frame"], replay=http["websocket_replay"],
                queue_size=http["websocket_queue"], allowed_origins=http["allowed_origins"],
                ssl_context=ssl_ctx, http_port=http["port"], session_cookie=SESSION_COOKIE,
                allow_query_token=http["allow_query_token"],
                max_ring_bytes=http["websocket_replay_bytes"])
            # registered before the dispatcher starts: start-up events get sequence numbers too
            self.dispatcher.add_listener(self.live.listener)
        self.dispatcher.add_listener(self.traces.listener, before_hooks=True)  # begin() needs its entry
        self.dispatcher.add_listener(self.traces.charge)

    @property
    def started(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._started

    @property
    def ready(self) -> bool:
        """True while started and the dispatcher thread runs (``GET /readyz``)."""
        return self._started and self.dispatcher.running

    def web_clients(self) -> int:
        """Websocket clients connected now (``GET /metrics``)."""
        return self.live.client_count() if self.live is not None else 0

    def _open_backend(self, name: str, backend: Backend) -> None:
        try:
            backend.validate_environment()
        except BackendUnavailable as e:
            self._backend_failed(backend, BackendStatus.FAILED_ENVIRONMENT, str(e))
            return
        if isinstance(backend, RequestChannel):
            backend.bind_requests(self.gate.handle, str(self.device_id))
        bind_views = getattr(backend, "bind_hub_views", None)
        if callable(bind_views):  # MQTT's Home Assistant discovery: the entities and their states
            bind_views(self.describe_devices, self.dispatcher.add_listener)
        # _mp: a backend's emit is "safe to call from any thread" (backends.base.Emit): reader
        # threads, device-library callbacks, timers and actions on worker threads all emit
        producer = self.bus.producer(f"backend:{name}", shared=True)
        try:
            backend.open(producer.publish)
        except Exception as e:
            log.exception("backend %s failed to open", name)
            self._backend_failed(backend, BackendStatus.FAILED_RUNTIME, f"{type(e).__name__}: {e}")
            return
        # publishes the status now, then each degraded/recovered change the backend reports
        backend.bind_status_listener(self._backend_event)

    def _backend_failed(self, backend: Backend, status: BackendStatus, error: str) -> None:
        backend.status = status
        backend.error = error
        log.error("backend %s %s: %s", backend.name, status, error)
        self._backend_event(backend)

    def _backend_event(self, backend: Backend) -> None:
        self.publish(Event(CATALOGUE.get("BackendStatusEvent"),
                           {"backend": backend.name, "status": str(backend.status), "error": backend.error},
                           time.monotonic_ns(), "hub"))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop in reverse start order; nothing accepted by the bus is lost."""
        with self._lock:
            if not self._started:
                self._close_resources()
                return
            self._started = False
        if self.web is not None:  # no new requests from here on
            self.web.stop(min(timeout, 5.0))
        self.publish(Event(CATALOGUE.get("ApplicationStoppingEvent"), {}, time.monotonic_ns(), "hub"))
        self.flush(timeout=min(timeout, 5.0))
        for name, backend in reversed(list(self.backends.items())):
            try:
                backend.close()
            except Exception:
                log.exception("backend %s failed to close", name)
        if self.live is not None:
            self.live.stop(min(timeout, 5.0))
        self.dispatcher.stop(timeout)
        self.pool.stop(timeout)
        bus = self.bus.stats()
        st = self.dispatcher.stats
        self._close_resources()
        # the accounting of the run: on a clean stop, accepted == dispatched and queued == run
        log.info("pihub stopped: %d events accepted, %d dispatched, %d dropped (bus full); "
                 "%d jobs queued, %d run, %d failed; %d hook jobs dropped (queue full)",
                 sum(s.published for s in bus.values()), st.events, sum(s.dropped for s in bus.values()),
                 self.pool.submitted, self.pool.completed, self.pool.failed, st.hooks_dropped)

    def _close_resources(self) -> None:
        for plugin_name in self.registry.names():
            plugin = self.registry.get(plugin_name)
            if not isinstance(plugin, Backend):
                try:
                    plugin.close()
                except Exception:
                    log.exception("plugin %s failed to close", plugin_name)
        self.matcher.close()
        self.auth.close()
        self.store.close()
        self.bus.close()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every published event was dispatched and every queued job ran.

        It waits on progress (the pool going idle, the dispatcher ending a loop turn), not
        in a polling loop. ``timeout`` is real seconds, not the hub's clock: this waits for
        threads, not for a time rule.

        Returns:
            False if that did not happen within ``timeout`` seconds, or at once when
            events are queued and no dispatcher runs to take them.
        """
        deadline = time.monotonic() + timeout
        dispatcher = self.dispatcher
        while self.pool.wait_idle(deadline - time.monotonic()):
            seen = dispatcher.progress
            empty = self._queued() == 0
            if empty:
                self.bus.wake()  # one more turn: an event popped just now may still be in process()
            moved = dispatcher.wait_progress(seen, deadline - time.monotonic())
            if empty and (moved or not dispatcher.running) and self.pool.pending == 0 and self._queued() == 0:
                return True
            if not moved:
                return False
        return False

    def _queued(self) -> int:
        """Events in the ring, all producers."""
        return sum(s.depth for s in self.bus.stats().values())

    # ------------------------------------------------------------ operations
    def publish(self, event: Event) -> bool:
        """Publish an event from Python code (plugins, HTTP); False when dropped."""
        if not event.ts_ns:
            event.ts_ns = time.monotonic_ns()
        if self.publish_sink is not None:
            return self.publish_sink(event)
        return self._hub_producer.publish(event)

    def execute(self, request: Request | str, args: Any = None) -> Response:
        """Run one action request now, on the calling thread.

        A request whose ``target`` names another device goes there through the ``mqtt``
        backend when one is configured (``mqtt.execute``: that device's token from
        ``mqtt.peer_tokens``, or this daemon's broker user trusted there), and the answer
        is that device's response; without an ``mqtt`` backend it is refused (an error
        Response), never run here.
        """
        if isinstance(request, str):
            request = Request(action=request, args=args if args is not None else {})
        if not request.target or request.target == self.device_id:
            resp = self.registry.execute(request.action, request.args)
        elif "mqtt" in self.backends:
            resp = self.registry.execute("mqtt.execute", {"target": request.target, "action": request.action,
                                                          "args": request.args})
        else:  # never run here what was meant for another device (Platypush does)
            resp = Response(errors=[f"target {request.target!r} is not this device ({self.device_id!r}), and no "
                                    "mqtt backend is configured to reach it"])
        resp.id = request.id
        resp.target = request.origin
        resp.origin = self.device_id
        return resp

    def webhook(self, event: Event, timeout: float = 30.0) -> Response | None:
        """Publish a ``WebhookEvent`` and wait for the reply of the hook that handles it.

        The dispatcher's one match of the event decides: the reply is the Response of the
        first hook it selects (that hook's actions run on the worker pool as usual).

        Args:
            event: the WebhookEvent.
            timeout: seconds to wait for the dispatcher and the hook together.

        Returns:
            None when no hook matches; else the hook's Response, or a Response with an
            error when the bus or the worker queue was full or the hook did not finish
            within ``timeout``.
        """
        reply = Reply()
        event.reply = reply
        self.dispatcher.expect_reply(reply)
        try:
            if not self.publish(event):
                return Response(errors=["the event bus is full: webhook dropped, try again"])
            answered, answer = reply.wait(timeout)
        finally:
            self.dispatcher.forget_reply(reply)
        if answered:
            return answer
        who = f"hook {reply.hook.name!r}" if reply.hook is not None else "the dispatcher"
        return Response(errors=[f"{who} did not reply within {timeout:g} s"])

    def call_procedure(self, name: str, args: Any, context: Mapping[str, Any] | None = None) -> Response:
        """Run ``procedure.NAME`` with ``args`` (a dict of arguments).

        ``context`` is the hook context the procedure inherits when a hook's steps call it
        (see :mod:`pihub.engine.procedures`); None from the API and the CLI.
        """
        proc = self.procedures.get(name)
        if proc is None:
            hint = did_you_mean(name, self.procedures)
            known = ", ".join(sorted(self.procedures)) or "none defined"
            return Response(errors=[f"no such procedure {name!r}{hint}; procedures: {known}"])
        if args is None:
            args = {}
        if not isinstance(args, Mapping):
            return Response(errors=[f"procedure.{name}: arguments must be a mapping, not {type(args).__name__}"])
        return self.runner.call(proc, dict(args), context=context)

    def _execute_step(self, action: str, args: Any, context: Mapping[str, Any], target: str = "") -> Response:
        rec = self.traces.action_started(action, args)
        if target and target != self.device_id:  # another device's: as a request (Hub.execute)
            resp = self.execute(Request(action=action, args=args, target=target, origin=str(self.device_id)))
        else:
            resp = self.registry.execute(action, args, context)
        self.traces.action_done(rec, resp)
        return resp

    def _spawn(self, fn: Any) -> None:
        task = self.traces.carry(fn)  # a fork or async part stays in its hook's trace
        if not self.pool.submit(task):
            task.drop()
            raise RuntimeError(f"worker queue full ({self.pool.queue_size} jobs): async work dropped")

    def _fire(self, hook: Hook, event: Event, captures: dict[str, Any]) -> Response:
        previous = self.traces.begin(hook.name, event)
        resp: Response | None = None
        try:
            resp = self.runner.run_hook(hook, event, captures)
        except BaseException as e:
            resp = Response(errors=[f"{type(e).__name__}: {e}"])
            raise
        finally:
            self.traces.end(previous, resp)
            reply = event.reply
            if reply is not None and reply.hook is hook:
                reply.resolve(resp)
        return resp

    def describe_actions(self) -> list[dict[str, Any]]:
        """Every action callable from outside, with its arguments and doc (``GET /actions``)."""
        return self.registry.describe()

    def camera(self, name: str) -> CameraSource | None:
        """The camera backend ``name`` (``camera.pi``) while it runs (``/camera/...``), else None."""
        from pihub.backends.camera import CameraBackend

        backend = self.backends.get(name)
        if not isinstance(backend, CameraBackend):
            return None
        if backend.status not in (BackendStatus.RUNNING, BackendStatus.DEGRADED):
            return None
        return backend

    # ------------------------------------------------------------ the panel's views
    def trace(self, event_id: str) -> dict[str, Any] | None:
        """The hook trace of a recent event, as ``pihub replay`` prints it, or None when it
        is no longer kept (the last ``http.websocket_replay`` events, fewer when they hold more
        than ``http.websocket_replay_bytes``: :class:`pihub.replay.LiveTraces`)."""
        return self.traces.trace(event_id, self.matcher.explain, str(self.device_id))

    def describe_hooks(self) -> dict[str, Any]:
        """The read-only hooks and procedures view.

        Returns:
            ``{"hooks": [{name, if (as configured), priority, fired (times since start),
            last_fired (epoch seconds or null)}], "procedures": [{name, params, async}]}``.
        """
        stats = self.traces.hook_stats()
        conditions = {spec.name: spec.if_ for spec in self.config.hooks}
        hooks = []
        for hook in self.hooks:
            fired, last = stats.get(hook.name, (0, 0.0))
            hooks.append({"name": hook.name, "if": conditions.get(hook.name), "priority": hook.priority,
                          "fired": fired, "last_fired": last or None})
        procedures = [{"name": p.name, "params": list(p.params), "async": p.is_async}
                      for p in self.procedures.values()]
        return {"hooks": hooks, "procedures": procedures}

    def describe_devices(self) -> list[dict[str, Any]]:
        """Each backend's status (``describe_status()``) with its ``entities``: what the
        backend's optional ``describe_entities()`` lists (``[]`` without one, or when it fails).
        """
        out = []
        for name, backend in self.backends.items():
            info = backend.describe_status()
            describe = getattr(backend, "describe_entities", None)
            try:
                info["entities"] = list(describe()) if callable(describe) else []
            except Exception as e:  # a backend that is not running cannot read its pins
                log.debug("backend %s lists no entities: %s", name, e)
                info["entities"] = []
            out.append(info)
        return out

    def dashboards(self) -> dict[str, Any]:
        """The validated ``dashboards`` section (:mod:`pihub.web.dashboards`): name -> dashboard."""
        return dict(self.config.sections.get("dashboards") or {})

    def websocket_port(self) -> int | None:
        """The websocket server's port (the bound one once started), or None when it does not run."""
        live = self.live
        return int(live.port) if live is not None and live.port else None

    def metrics(self) -> HubMetrics:
        """A snapshot of the hub's counters (``GET /metrics``); never raises, also on a
        stopped hub (its bus counters are empty only if the bus can no longer report)."""
        try:
            bus = self.bus.stats()
        except Exception:  # a stopped hub has closed its bus
            bus = {}
        lat = self.dispatcher.latency
        pool = self.pool
        return HubMetrics(
            device_id=str(self.device_id), version=__version__, bus=bus,
            dispatch=replace(self.dispatcher.stats),
            latency=LatencySnapshot(tuple(lat.bounds), tuple(lat.counts), lat.total_us, lat.n),
            pool=PoolStats(pool.workers, pool.pending, pool.submitted, pool.completed, pool.failed,
                           pool.rejected),
            websocket_clients=self._web_clients_or_zero(),
            connections_refused=self._connections_refused(),
            regex_timeouts=_regex_timeouts(),
            recent_events=self._recent_events())

    def _web_clients_or_zero(self) -> int:
        try:
            return int(self.web_clients())
        except Exception:  # a websocket server in the middle of stopping
            return 0

    def _connections_refused(self) -> dict[str, int]:
        """Connections closed at accept by a limit, per server (those that run)."""
        out: dict[str, int] = {}
        if self.web is not None:
            out["http"] = int(self.web.refused_connections)
        if self.live is not None:
            out["websocket"] = int(self.live.stats.get("connections_refused", 0))
        return out

    def _recent_events(self) -> dict[str, tuple[int, int]]:
        """``(bytes kept by estimate, events dropped for the byte budget)`` per ring of
        recent events: ``traces``, and ``websocket`` when it runs."""
        out = {"traces": (self.traces.bytes, self.traces.evicted_for_bytes)}
        live = self.live
        if live is not None:
            out["websocket"] = (int(live.ring_bytes), int(live.stats.get("ring_evicted_for_bytes", 0)))
        return out

    def status(self) -> dict[str, Any]:
        """The JSON-able state of the daemon (``GET /status``, read scope).

        Keys: ``device_id``, ``version``, ``pid``, ``ready`` (see :attr:`ready`),
        ``uptime_s`` (seconds since :meth:`start` on the hub's clock; 0 when not started),
        ``backends`` (each :meth:`Backend.describe_status <pihub.backends.base.Backend.describe_status>`:
        ``name``, ``status`` -- ``running``, ``degraded``, ``failed: ...`` -- and ``error``,
        the reason), ``bus`` (``published``, ``dropped``, ``depth`` in all, and per
        ``producers``), ``hooks`` (``defined``, ``fired``, ``dropped``, ``regex_timeouts``), ``dispatcher``
        (``events``, ``batches``, ``overflow_reports``), ``pool``, ``procedures`` (names)
        ``websocket_clients``, ``connections_refused`` (per server, ``http`` and
        ``websocket``: connections closed at accept because a limit was reached) and
        ``recent_events`` (per ring, ``traces`` and ``websocket``: ``bytes`` kept by
        estimate and events ``evicted_for_bytes`` by ``http.websocket_replay_bytes``).
        """
        m = self.metrics()
        started_at = self._started_at
        uptime = max(0.0, self.clock.now() - started_at) if self._started and started_at is not None else 0.0
        producers = {name: s._asdict() for name, s in m.bus.items()}
        st = m.dispatch
        return {
            "device_id": m.device_id,
            "version": m.version,
            "pid": os.getpid(),
            "ready": self.ready,
            "uptime_s": round(uptime, 3),
            "backends": [b.describe_status() for b in self.backends.values()],
            "bus": {"published": sum(s.published for s in m.bus.values()),
                    "dropped": sum(s.dropped for s in m.bus.values()),
                    "depth": sum(s.depth for s in m.bus.values()),
                    "producers": producers},
            "hooks": {"defined": len(self.hooks), "fired": st.hooks_fired, "dropped": st.hooks_dropped,
                      "regex_timeouts": m.regex_timeouts},
            "dispatcher": {"events": st.events, "batches": st.batches, "overflow_reports": st.overflow_reports,
                           "hooks_inline": st.hooks_inline, "inline_overruns": st.inline_overruns,
                           "inline_deferred": st.inline_deferred, "inline_failed": st.inline_failed},
            "pool": {"workers": m.pool.workers, "pending": m.pool.pending, "completed": m.pool.completed,
                     "failed": m.pool.failed, "rejected": m.pool.rejected},
            "procedures": sorted(self.procedures),
            "websocket_clients": m.websocket_clients,
            "connections_refused": dict(m.connections_refused),
            "recent_events": {ring: {"bytes": kept, "evicted_for_bytes": evicted}
                              for ring, (kept, evicted) in m.recent_events.items()},
        }


def _regex_timeouts() -> int:
    """:data:`pihub.engine.conditions.REGEX_TIMEOUTS`' count (imported as the hooks' build does)."""
    from pihub.engine.conditions import REGEX_TIMEOUTS

    return REGEX_TIMEOUTS.count


@dataclass(frozen=True, slots=True)
class LatencySnapshot:
    """The dispatch latency histogram (event timestamp -> hook job queued) at one moment.

    Attributes:
        bounds_us: bucket upper bounds in microseconds, ascending; the last is +inf.
        counts: observations per bucket (not cumulative), one per bound.
        total_us: sum of every observation, in microseconds.
        n: number of observations.
    """

    bounds_us: tuple[float, ...]
    counts: tuple[int, ...]
    total_us: float
    n: int


@dataclass(frozen=True, slots=True)
class PoolStats:
    """The hook worker pool's counters at one moment (jobs; ``workers`` in threads)."""

    workers: int
    pending: int
    submitted: int
    completed: int
    failed: int
    rejected: int


@dataclass(frozen=True, slots=True)
class HubMetrics:
    """What :meth:`Hub.metrics` reports: every counter ``GET /metrics`` exposes of the hub.

    Attributes:
        device_id: this hub's device id.
        version: pihub's version.
        bus: each producer's ring counters, by producer name.
        dispatch: the dispatcher's counters (a copy).
        latency: the dispatch latency histogram.
        pool: the worker pool's counters.
        websocket_clients: authenticated websocket connections open now.
        connections_refused: connections closed at accept by a limit, per server
            (``http``, ``websocket``; a server that does not run is absent).
        regex_timeouts: regular-expression matches of conditions given up after
            :data:`pihub.engine.conditions.MATCH_TIMEOUT` (no match), in this process.
        recent_events: per ring of recent events (``traces``, ``websocket``), the bytes
            it keeps by estimate and the events it dropped for its byte budget.
    """

    device_id: str
    version: str
    bus: Mapping[str, ProducerStats]
    dispatch: DispatchStats
    latency: LatencySnapshot
    pool: PoolStats
    websocket_clients: int
    connections_refused: Mapping[str, int] = field(default_factory=dict)
    regex_timeouts: int = 0
    recent_events: Mapping[str, tuple[int, int]] = field(default_factory=dict)
