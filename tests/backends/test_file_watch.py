"""The file_watch backend against the real kernel inotify, on temp dirs.

Time: coalescing windows run on a ManualClock. The kernel delivers one inotify fd's events
in order, so a test that must know every earlier change was handled makes a *sentinel*
file after them and waits for its create event.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from pihub_testing import EventRecorder, wait_for

from pihub.backends.base import BackendStatus
from pihub.backends.file_watch import FileWatchBackend, watched_dirs
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
