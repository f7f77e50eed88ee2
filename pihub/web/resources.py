"""``GET /resources/<name>/<path>``: read-only files under the ``http.resource_dirs`` roots.

A request needs the read scope (:mod:`pihub.web.access`). Bottle's ``static_file`` serves
the file (types, ranges, caching headers) once :meth:`Resources.resolve` has proved that
it is a regular file inside its root: see there for how traversal is refused.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping

import bottle

from pihub.web.context import WebContext, error_response

log = logging.getLogger("pihub.web")

__all__ = ["Resources"]


class Resources:
    """The ``/resources`` route of one app.

    Args:
        ctx: the app's shared context.
        dirs: ``http.resource_dirs``: name -> directory (``~`` expanded; a name may
            contain ``/``, an empty one is ignored with a warning).
    """

    def __init__(self, ctx: WebContext, dirs: Mapping[str, str]) -> None:
        self.ctx = ctx
        #: name -> the real path of its directory.
        self.roots: dict[str, str] = {}
        for name, directory in dirs.items():
            key = name.strip("/")
            root = os.path.realpath(os.path.expanduser(directory))
            if not key:
                log.warning("http.resource_dirs: an empty name is ignored")
                continue
            if not os.path.isdir(root):
                log.warning("http.resource_dirs.%s: %s is not a directory; its files will 404", key,
                            directory)
            self.roots[key] = root

    def resource(self, rest: str) -> bottle.HTTPResponse:
        """``GET /resources/<name>/<path>``: a file under a ``resource_dirs`` root, never outside."""
        self.ctx.require("read")
        found = self.resolve(bottle.request.environ.get("bottle.raw_path", ""))
        if found is None:
            raise error_response(404, "no such resource")
        root, relative = found
        return bottle.static_file(relative, root=root)

    def resolve(self, raw_path: str) -> tuple[str, str] | None:
        """``(root, path relative to it)`` of a servable regular file, or None.

        ``raw_path`` is the WSGI ``PATH_INFO`` before Bottle re-decodes it (Bottle drops
        invalid UTF-8 bytes, which would turn ``.%FF.`` into ``..``): it is decoded
        strictly here, split on ``/``, and refused if any segment is empty, ``.``, ``..``,
        or holds a NUL or a backslash. The joined path is then resolved with
        :func:`os.path.realpath` (following every symlink) and MUST stay under the root's
        own real path (:func:`os.path.commonpath`), and be a regular file.
        """
        try:
            path = raw_path.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return None
        prefix = "/resources/"
        if not path.startswith(prefix):
            return None
        segments = path[len(prefix):].split("/")
        for k in range(len(segments) - 1, 0, -1):
            root = self.roots.get("/".join(segments[:k]))
            if root is not None:
                rest = segments[k:]
                break
        else:
            return None
        if any(s in ("", ".", "..") or "\x00" in s or "\\" in s for s in rest):
            return None
        real = os.path.realpath(os.path.join(root, *rest))
        try:
            if os.path.commonpath([root, real]) != root or real == root:
                return None
            if not stat.S_ISREG(os.stat(real).st_mode):
                return None
        except (OSError, ValueError):
            return None
        return root, os.path.relpath(real, root)
