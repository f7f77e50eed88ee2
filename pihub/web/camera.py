"""``/camera/<name>/photo.jpg`` and ``/camera/<name>/video.mjpeg``: a camera over HTTP.

``<name>`` is the camera section without its ``camera.`` prefix, with dots or slashes
(Platypush's layout: ``/camera/pi/photo.jpg`` is section ``camera.pi``). The camera is
reached through :meth:`pihub.web.WebHub.camera` only, as a :class:`CameraSource`.

* ``GET /camera/<name>/photo.jpg``: one JPEG finished
  after the request; ``Cache-Control: no-store``.
* ``GET /camera/<name>/video.mjpeg``: ``multipart/x-mixed-replace;
  boundary=frame``, each part ``--frame``, ``Content-Type: image/jpeg``,
  ``Content-Length``, the JPEG (Platypush's framing plus the length). At most the
  camera's ``mjpeg_fps`` frames per second; a slow client gets the latest frame and skips
  the others, so nothing queues for it. Each client holds one HTTP worker thread while it
  watches: the camera's ``max_mjpeg_viewers`` bounds them (503 beyond).

Both need the ``read`` scope (:mod:`pihub.web.access`), like every GET route. A camera
that is not configured or not running is a 404; one that gives no picture in time, or has
its MJPEG clients already, a 503 with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Final, Protocol

import bottle

from pihub.errors import ActionError
from pihub.web.context import WebContext, error_response

log = logging.getLogger("pihub.web")

__all__ = ["BOUNDARY", "CameraRoutes", "CameraSource", "camera_routes"]

#: The multipart boundary of ``video.mjpeg`` (Platypush's).
BOUNDARY: Final = "frame"


class CameraSource(Protocol):
    """What the HTTP routes use of a camera (:class:`pihub.backends.camera.CameraBackend`)."""

    def snapshot(self) -> bytes:
        """A JPEG finished after the call. Raises ActionError when there is none in time."""
        ...

    def jpeg_frames(self) -> Iterator[bytes]:
        """JPEG frames at the camera's capped rate; ``close()`` it when done. Raises
        ActionError when the camera is busy or does not start."""
        ...


class CameraRoutes:
    """The camera routes of one app.

    Args:
        ctx: the app's shared context.
    """

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    def _camera(self, name: str) -> CameraSource:
        section = "camera." + name.strip("/").replace("/", ".")
        camera: CameraSource | None = self.ctx.hub.camera(section)
        if camera is None:
            raise error_response(404, f"no running camera {section!r} (configure a {section}: section)")
        return camera

    def photo(self, name: str) -> bottle.HTTPResponse:
        """``GET /camera/<name>/photo.jpg``: a fresh JPEG."""
        self.ctx.require("read")
        camera = self._camera(name)
        try:
            jpeg = camera.snapshot()
        except ActionError as e:
            raise error_response(503, str(e), "CAMERA_UNAVAILABLE", {"Retry-After": "1"}) from None
        return bottle.HTTPResponse(body=jpeg, status=200, headers={
            "Content-Type": "image/jpeg", "Content-Length": str(len(jpeg)), "Cache-Control": "no-store"})

    def video(self, name: str) -> bottle.HTTPResponse:
        """``GET /camera/<name>/video.mjpeg``: the multipart MJPEG stream."""
        self.ctx.require("read")
        camera = self._camera(name)
        try:
            frames = camera.jpeg_frames()
        except ActionError as e:
            raise error_response(503, str(e), "CAMERA_UNAVAILABLE", {"Retry-After": "5"}) from None
        return bottle.HTTPResponse(body=_Parts(frames), status=200, headers={
            "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}", "Cache-Control": "no-store"})


class _Parts:
    """The multipart body: one part per frame; ``close()`` (from the WSGI server when the
    client goes or the response ends) closes the frame iterator, releasing the camera."""

    def __init__(self, frames: Iterator[bytes]) -> None:
        self._frames = frames

    def __iter__(self) -> Iterator[bytes]:
        for jpeg in self._frames:
            yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                   .encode("ascii") + jpeg + b"\r\n")

    def close(self) -> None:
        """Close the frame iterator."""
        close = getattr(self._frames, "close", None)
        if close is not None:
            close()


def camera_routes(app: bottle.Bottle, ctx: WebContext) -> CameraRoutes:
    """Register the camera routes on ``app``; the route object."""
    routes = CameraRoutes(ctx)
    # one spelling each, as OpenAPI describes them (aliases would be undocumented routes)
    app.route("/camera/<name:path>/photo.jpg", "GET", routes.photo)
    app.route("/camera/<name:path>/video.mjpeg", "GET", routes.video)
    return routes

