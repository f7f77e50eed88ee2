"""The file_watch backend against the real kernel inotify, on temp dirs.

Time: coalescing windows run on a ManualClock. The kernel delivers one inotify fd's events
in order, so a test that must know every earlier change was handled makes a *sentinel*
file after them and waits for its create event.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
from pathlib import Path

import pytest
from pihub_testing import EventRecorder, wait_for

from pihub.backends.base import BackendStatus
from pihub.backends.file_watch import IN_Q_OVERFLOW, FileWatchBackend, watched_dirs
from pihub.clock import ManualClock
from pihub.errors import ConfigProblems


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def opened(clock):
    backends = []

    def make(paths, **config):
        backend = FileWatchBackend({"paths": paths, **config}, clock=clock)
        backend.validate_environment()
        rec = EventRecorder()
        backend.open(rec)
        backends.append(backend)
        return backend, rec

    yield make
    for b in backends:
        b.close()


def _sentinel(rec: EventRecorder, directory: Path, name: str = "zz-sentinel") -> None:
    """Create ``directory/name`` and wait for its create: every earlier change was handled."""
    (directory / name).write_text("")
    assert rec.wait(lambda: rec.of("PathCreateEvent", path=str(directory / name))), rec.summary()


def _kinds(rec: EventRecorder, ignore: str = "zz-sentinel") -> list[tuple[str, str]]:
    return [(t, a["path"]) for t, a in rec.summary() if not a["path"].endswith(ignore)]


def test_create_modify_delete_move_fire_the_right_events(opened, clock, tmp_path):
    backend, rec = opened([str(tmp_path)])
    f = tmp_path / "a.txt"
    f.write_text("hello")
    _sentinel(rec, tmp_path, "s1")
    assert _kinds(rec, "s1") == [("PathCreateEvent", str(f))]
    create = rec.of("PathCreateEvent", path=str(f))[0]
    assert create.args == {"path": str(f), "is_directory": False, "watch_path": str(tmp_path)}
    assert create.source == "file_watch"
    clock.advance(0.5)  # the create's window ends: the writes that filled the file, as one modify
    assert rec.wait(lambda: rec.of("PathModifyEvent", path=str(f)))
    assert rec.of("PathModifyEvent", path=str(f))[0].args["changes"] >= 1
    clock.advance(0.5)

    n = len(rec.events)
    f.rename(tmp_path / "b.txt")
    (tmp_path / "b.txt").unlink()
    (tmp_path / "d").mkdir()
    _sentinel(rec, tmp_path, "s2")
    # the sentinels are markers (s1's coalesced modify may land after n was taken)
    got = [(t, a) for t, a in rec.summary()[n:] if not a["path"].endswith(("s1", "s2"))]
    assert got == [
        ("PathMovedEvent", {"path": str(f), "is_directory": False, "watch_path": str(tmp_path),
                            "new_path": str(tmp_path / "b.txt")}),
        ("PathDeleteEvent", {"path": str(tmp_path / "b.txt"), "is_directory": False, "watch_path": str(tmp_path)}),
        ("PathCreateEvent", {"path": str(tmp_path / "d"), "is_directory": True, "watch_path": str(tmp_path)}),
    ]
    assert backend.status == BackendStatus.RUNNING


def test_a_burst_of_1000_writes_is_coalesced_and_bounded(opened, clock, tmp_path):
    f = tmp_path / "log"
    f.write_text("")
    backend, rec = opened([str(tmp_path)], coalesce=0.5)
    with f.open("a") as out:
        for i in range(1000):
            out.write(f"line {i}\n")
            out.flush()
    _sentinel(rec, tmp_path)
    mods = rec.of("PathModifyEvent", path=str(f))
    assert [e.args["changes"] for e in mods] == [1]  # the first change, at once
    clock.advance(0.5)  # the window ends: one event for the rest of the burst
    assert rec.wait(lambda: len(rec.of("PathModifyEvent", path=str(f))) == 2)
    rest = rec.of("PathModifyEvent", path=str(f))[1].args["changes"]
    assert 1 <= rest <= 1000 + 1  # the kernel merges identical unread events: fewer reach us
    clock.advance(5)  # quiet windows end without an event
    _sentinel(rec, tmp_path, "zz-sentinel2")
    assert len(rec.of("PathModifyEvent", path=str(f))) == 2
    status = backend.watch_status()
    assert status["coalesced"] >= rest  # (the sentinels' own writes are coalesced into their creates)


def test_coalesce_zero_reports_every_change_the_kernel_delivers(opened, tmp_path):
    f = tmp_path / "x"
    f.write_text("")
    _, rec = opened([str(tmp_path)], coalesce=0)
    f.write_text("1")
    _sentinel(rec, tmp_path)
    f.write_text("2")
    _sentinel(rec, tmp_path, "zz-sentinel2")
    assert len(rec.of("PathModifyEvent", path=str(f))) >= 2


def test_a_file_path_reports_only_that_file_and_survives_an_atomic_save(opened, tmp_path):
    target = tmp_path / "app.conf"
    target.write_text("a")
    backend, rec = opened([str(target)], coalesce=0)
    (tmp_path / "other").write_text("x")
    tmp = tmp_path / ".app.conf.swp"
    tmp.write_text("b")
    tmp.rename(target)  # an editor's save: a move onto the watched name is its create
    target.write_text("c")
    assert rec.wait(lambda: rec.of("PathModifyEvent", path=str(target)))
    assert {a["path"] for _, a in rec.summary()} == {str(target)}
    assert rec.summary()[0] == ("PathCreateEvent", {"path": str(target), "is_directory": False,
                                                    "watch_path": str(target)})
    assert backend.status == BackendStatus.RUNNING


def test_a_missing_path_degrades_and_is_watched_when_it_appears(opened, tmp_path):
    want = tmp_path / "later" / "deeper"
    backend, rec = opened([{"path": str(want), "recursive": True}])
    assert backend.status == BackendStatus.DEGRADED
    assert backend.error == (f"watched path {str(want)!r} does not exist; watching {str(tmp_path)!r} "
                             f"for it to appear")
    assert backend.watch_status()["paths"][0]["watching"] is False
    want.mkdir(parents=True)
    assert rec.wait(lambda: backend.status == BackendStatus.RUNNING), backend.error
    assert rec.of("PathCreateEvent", path=str(want), is_directory=True)
    assert backend.error is None
    (want / "f").write_text("x")
    assert rec.wait(lambda: rec.of("PathCreateEvent", path=str(want / "f")))


def test_a_deleted_path_degrades_and_is_watched_again_when_recreated(opened, tmp_path):
    root = tmp_path / "inbox"
    root.mkdir()
    backend, rec = opened([str(root)])
    assert backend.status == BackendStatus.RUNNING
    root.rmdir()
    assert rec.wait(lambda: backend.status == BackendStatus.DEGRADED)
    assert "does not exist" in backend.error and repr(str(root)) in backend.error
    assert rec.of("PathDeleteEvent", path=str(root), is_directory=True)
    root.mkdir()
    assert rec.wait(lambda: backend.status == BackendStatus.RUNNING)
    (root / "new").write_text("x")
    assert rec.wait(lambda: rec.of("PathCreateEvent", path=str(root / "new")))


def test_a_deleted_file_path_degrades_until_it_is_back(opened, tmp_path):
    f = tmp_path / "flag"
    f.write_text("")
    backend, rec = opened([str(f)])
    f.unlink()
    assert rec.wait(lambda: backend.status == BackendStatus.DEGRADED)
    assert rec.of("PathDeleteEvent", path=str(f))
    f.write_text("")
    assert rec.wait(lambda: backend.status == BackendStatus.RUNNING)
    assert rec.wait(lambda: rec.of("PathCreateEvent", path=str(f)))


def test_recursive_watches_new_subdirectories_and_what_they_already_hold(opened, tmp_path):
    (tmp_path / "old" / "deep").mkdir(parents=True)
    backend, rec = opened([{"path": str(tmp_path), "recursive": True}])
    assert set(watched_dirs(backend)) == {str(tmp_path), str(tmp_path / "old"), str(tmp_path / "old" / "deep")}
    (tmp_path / "old" / "deep" / "f").write_text("x")
    assert rec.wait(lambda: rec.of("PathCreateEvent", path=str(tmp_path / "old" / "deep" / "f")))
    new = tmp_path / "new"
    new.mkdir()
    (new / "early").write_text("")  # may land before the watch on new/: the scan reports it
    _sentinel(rec, new)
    assert rec.of("PathCreateEvent", path=str(new / "early"))
    assert str(new) in watched_dirs(backend)


def test_a_moved_directory_is_watched_under_its_new_name(opened, tmp_path):
    (tmp_path / "a").mkdir()
    backend, rec = opened([{"path": str(tmp_path), "recursive": True}])
    (tmp_path / "a").rename(tmp_path / "b")
    (tmp_path / "b" / "f").write_text("")
    assert rec.wait(lambda: rec.of("PathCreateEvent", path=str(tmp_path / "b" / "f")))
    assert rec.of("PathMovedEvent", path=str(tmp_path / "a"), new_path=str(tmp_path / "b"))
    assert str(tmp_path / "a") not in watched_dirs(backend)


def test_moves_in_and_out_are_creates_and_deletes(opened, tmp_path):
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()
    (outside / "x").write_text("")
    _, rec = opened([str(inside)])
    (outside / "x").rename(inside / "x")
    (inside / "x").rename(outside / "y")
    _sentinel(rec, inside)
    assert _kinds(rec) == [("PathCreateEvent", str(inside / "x")), ("PathDeleteEvent", str(inside / "x"))]


def test_filters_patterns_and_events(opened, tmp_path):
    _, rec = opened([{"path": str(tmp_path), "patterns": ["*.jpg", "zz-*"], "ignore_patterns": ["tmp_*"],
                      "events": ["create"], "ignore_directories": True}], coalesce=0)
    (tmp_path / "a.jpg").write_text("x")
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "tmp_b.jpg").write_text("x")
    (tmp_path / "c.jpg").mkdir()
    (tmp_path / "a.jpg").unlink()
    _sentinel(rec, tmp_path)
    assert _kinds(rec) == [("PathCreateEvent", str(tmp_path / "a.jpg"))]


def test_max_watches_degrades_naming_the_key(opened, tmp_path):
    for i in range(4):
        (tmp_path / f"d{i}").mkdir()
    backend, _ = opened([{"path": str(tmp_path), "recursive": True}], max_watches=2)
    assert backend.status == BackendStatus.DEGRADED
    assert "max_watches (2) reached" in backend.error and "retrying every 30 s" in backend.error


def test_the_kernel_watch_limit_names_max_user_watches_and_is_retried(clock, tmp_path, monkeypatch):
    import inotify_simple

    real = inotify_simple.INotify.add_watch
    full = {"on": True}

    def add_watch(self, path, mask):  # the kernel's answer once max_user_watches are in use
        if full["on"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, path, mask)

    monkeypatch.setattr(inotify_simple.INotify, "add_watch", add_watch)
    backend = FileWatchBackend({"paths": [str(tmp_path)], "retry_interval": 10}, clock=clock)
    rec = EventRecorder()
    backend.open(rec)
    try:
        assert backend.status == BackendStatus.DEGRADED
        assert "/proc/sys/fs/inotify/max_user_watches" in backend.error
        assert repr(str(tmp_path)) in backend.error and "retrying every 10 s" in backend.error
        full["on"] = False
        clock.advance(10)
        assert wait_for(lambda: backend.status == BackendStatus.RUNNING)
        (tmp_path / "f").write_text("")
        assert rec.wait(lambda: rec.of("PathCreateEvent", path=str(tmp_path / "f")))
    finally:
        backend.close()


def test_no_event_after_close_even_when_a_window_ends(clock, tmp_path):
    f = tmp_path / "f"
    f.write_text("")
    backend = FileWatchBackend({"paths": [str(tmp_path)]}, clock=clock)
    rec = EventRecorder()
    backend.open(rec)
    f.write_text("1")
    assert rec.wait(lambda: rec.of("PathModifyEvent"))
    f.write_text("2")
    _sentinel(rec, tmp_path)
    backend.close()
    n = len(rec.events)
    clock.advance(60)
    assert len(rec.events) == n
    assert backend.watch_status()["watches"] == 0


@pytest.mark.parametrize(("config", "message"), [
    ({"paths": []}, "paths: must list at least one path to watch"),
    ({"paths": ["relative/dir"]}, "paths[0].path: 'relative/dir' is not an absolute path"),
    ({"paths": [{"path": "/tmp", "events": ["create", "rename"]}]},
     "paths[0].events: 'rename' is not allowed (allowed: create, modify, delete, move)"),
    ({"paths": [{"path": "/tmp", "recursive": "yes"}]}, "paths[0].recursive"),
    ({"paths": [{"path": "/tmp", "patterns": [3]}]}, "paths[0].patterns: 3 is not allowed"),
    ({"paths": ["/tmp"], "coalesce": -1}, "coalesce"),
])
def test_bad_config_names_the_key_and_what_is_allowed(config, message):
    with pytest.raises(ConfigProblems) as e:
        FileWatchBackend(config)
    assert message in str(e.value)


def test_platypush_watch_paths_is_accepted():
    backend = FileWatchBackend({"watch_paths": ["~/inbox"]})
    assert backend.roots[0].path == os.path.expanduser("~/inbox")


def test_after_a_queue_overflow_the_directories_made_meanwhile_are_watched(opened, tmp_path, monkeypatch, caplog):
    (tmp_path / "old").mkdir()
    backend, rec = opened([{"path": str(tmp_path), "recursive": True}], coalesce=0)
    import inotify_simple

    real_read = backend._ino.read
    overflowed = threading.Event()

    def read(*args, **kwargs):  # the kernel's full queue: every change up to the marker is lost, one
        events = real_read(*args, **kwargs)  # overflow event comes instead (wd -1, IN_Q_OVERFLOW)
        if overflowed.is_set() or not events:
            return events
        if any(e.name == "zz-lost-end" for e in events):
            overflowed.set()
            return [inotify_simple.Event(-1, IN_Q_OVERFLOW, 0, "")]
        return []

    monkeypatch.setattr(backend._ino, "read", read)
    with caplog.at_level(logging.WARNING, logger="pihub.backends.file_watch"):
        (tmp_path / "sub" / "deeper").mkdir(parents=True)
        (tmp_path / "old").rmdir()
        (tmp_path / "zz-lost-end").write_text("")
        assert wait_for(lambda: backend.watch_status()["overflows"] == 1)
    assert "inotify queue overflowed" in caplog.text
    inside = tmp_path / "sub" / "deeper" / "inside"
    inside.write_text("")
    assert rec.wait(lambda: rec.of("PathCreateEvent", path=str(inside))), rec.summary()
    assert set(watched_dirs(backend)) == {str(tmp_path), str(tmp_path / "sub"), str(tmp_path / "sub" / "deeper")}
    assert not rec.of("PathCreateEvent", path=str(tmp_path / "sub"))  # lost in the overflow, not replayed
    assert backend.status == BackendStatus.RUNNING


def _deeper_than_path_max(top: Path) -> None:
    """Make a chain of directories below ``top`` whose path ends up longer than PATH_MAX."""
    os.mkdir(top)
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(25):  # 25 * 201 characters > 4096
            os.mkdir("d" * 200, dir_fd=fd)
            child = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def test_a_directory_too_deep_to_watch_is_skipped_and_the_rest_stays_watched(opened, tmp_path):
    _deeper_than_path_max(tmp_path / "deep")
    (tmp_path / "ok").mkdir()
    try:
        backend, rec = opened([{"path": str(tmp_path), "recursive": True}])
        assert backend.status == BackendStatus.DEGRADED
        assert backend.error.startswith(f"1 directory below {str(tmp_path)!r} cannot be watched (the rest is)")
        assert "retrying every 30 s" in backend.error
        assert len(backend.error) < 600  # the unwatchable path (> 4 KB) is shown cut
        status = backend.watch_status()
        assert status["paths"][0]["watching"] is True and status["paths"][0]["problem"] == backend.error
        assert str(tmp_path / "ok") in watched_dirs(backend) and status["watches"] > 2
        (tmp_path / "ok" / "f").write_text("")
        assert rec.wait(lambda: rec.of("PathCreateEvent", path=str(tmp_path / "ok" / "f")))
    finally:
        shutil.rmtree(tmp_path / "deep")


def test_an_unreadable_subdirectory_is_skipped_then_watched_once_readable(clock, tmp_path, monkeypatch):
    import inotify_simple

    locked = tmp_path / "locked"
    (locked / "inner").mkdir(parents=True)
    (tmp_path / "open").mkdir()
    real = inotify_simple.INotify.add_watch
    denied = {"on": True}

    def add_watch(self, path, mask):  # the kernel's answer for a directory the daemon user may not read
        if denied["on"] and os.fsdecode(path) == str(locked):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        return real(self, path, mask)

    monkeypatch.setattr(inotify_simple.INotify, "add_watch", add_watch)
    backend = FileWatchBackend({"paths": [{"path": str(tmp_path), "recursive": True}], "retry_interval": 10},
                               clock=clock)
    rec = EventRecorder()
    backend.open(rec)
    try:
        assert backend.status == BackendStatus.DEGRADED
        assert backend.error == (f"1 directory below {str(tmp_path)!r} cannot be watched (the rest is), e.g. "
                                 f"permission denied watching {str(locked)!r} for {str(tmp_path)!r} (the daemon "
                                 f"user needs read access); retrying every 10 s")
        assert set(watched_dirs(backend)) == {str(tmp_path), str(tmp_path / "open")}
        (tmp_path / "open" / "f").write_text("")
        assert rec.wait(lambda: rec.of("PathCreateEvent", path=str(tmp_path / "open" / "f")))
        denied["on"] = False
        clock.advance(10)
        assert wait_for(lambda: backend.status == BackendStatus.RUNNING), backend.error
        assert str(locked / "inner") in watched_dirs(backend)
        (locked / "inner" / "g").write_text("")
        assert rec.wait(lambda: rec.of("PathCreateEvent", path=str(locked / "inner" / "g")))
    finally:
        backend.close()


def test_directories_gone_before_their_watch_are_ignored(opened, tmp_path, caplog):
    backend, rec = opened([{"path": str(tmp_path), "recursive": True}], coalesce=0)
    statuses = []
    backend.bind_status_listener(lambda b: statuses.append((b.status, b.error)))
    with caplog.at_level(logging.DEBUG, logger="pihub.backends.file_watch"):
        with backend._lock:  # the reader handles the creates only once the directories are gone
            for i in range(20):
                (tmp_path / f"t{i}").mkdir()
                (tmp_path / f"t{i}").rmdir()
        _sentinel(rec, tmp_path)
    assert statuses == [(BackendStatus.RUNNING, None)]  # the call at binding, no change after
    assert [r.getMessage() for r in caplog.records if r.name.startswith("pihub.backends")] == []
    assert rec.of("PathCreateEvent", path=str(tmp_path / "t19"), is_directory=True)
    assert rec.of("PathDeleteEvent", path=str(tmp_path / "t19"), is_directory=True)


@pytest.mark.parametrize("err", [errno.ENOENT, errno.ENOTDIR])
def test_a_directory_that_vanishes_while_the_tree_is_walked_is_ignored(clock, tmp_path, monkeypatch, err):
    import inotify_simple

    (tmp_path / "a" / "b").mkdir(parents=True)
    real = inotify_simple.INotify.add_watch
    vanish = {str(tmp_path), str(tmp_path / "a" / "b")}  # each fails once, as if it went (or became a file)

    def add_watch(self, path, mask):
        if os.fsdecode(path) in vanish:
            vanish.discard(os.fsdecode(path))
            raise OSError(err, os.strerror(err))
        return real(self, path, mask)

    monkeypatch.setattr(inotify_simple.INotify, "add_watch", add_watch)
    backend = FileWatchBackend({"paths": [{"path": str(tmp_path), "recursive": True}]}, clock=clock)
    backend.open(EventRecorder())
    try:
        assert backend.status == BackendStatus.RUNNING, backend.error
        assert set(watched_dirs(backend)) == {str(tmp_path), str(tmp_path / "a")}
        assert backend.watch_status()["paths"][0]["problem"] is None
    finally:
        backend.close()


def test_past_the_remembered_unwatchable_directories_a_retry_walks_the_whole_tree(clock, tmp_path, monkeypatch):
    import inotify_simple

    import pihub.backends.file_watch as fw

    monkeypatch.setattr(fw, "_MAX_SKIPPED", 1)
    locked = {str(tmp_path / f"l{i}") for i in range(3)}
    for d in locked:
        os.mkdir(d)
    real = inotify_simple.INotify.add_watch
    denied = {"on": True}

    def add_watch(self, path, mask):
        if denied["on"] and os.fsdecode(path) in locked:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        return real(self, path, mask)

    monkeypatch.setattr(inotify_simple.INotify, "add_watch", add_watch)
    backend = FileWatchBackend({"paths": [{"path": str(tmp_path), "recursive": True}], "retry_interval": 10},
                               clock=clock)
    backend.open(EventRecorder())
    try:
        assert backend.error.startswith(f"3 directories below {str(tmp_path)!r} cannot be watched (the rest is)")
        denied["on"] = False
        clock.advance(10)
        assert wait_for(lambda: backend.status == BackendStatus.RUNNING), backend.error
        assert set(watched_dirs(backend)) == {str(tmp_path), *locked}
    finally:
        backend.close()
