"""Pure byte-stream framers: ``feed(bytes) -> readings``, with no I/O, threads or clock.

A backend's reader thread only reads bytes and feeds them to a parser (mido's
``Parser`` pattern); everything about framing, decoding and bad input lives here and is
tested with byte strings.

* :mod:`pihub.parsers.line`: newline-framed sensor lines, JSON objects
  (:class:`~pihub.parsers.line.JsonLineParser`) or ``key=value`` pairs
  (:class:`~pihub.parsers.line.KeyValueParser`).
"""

from __future__ import annotations

from pihub.parsers.line import PARSERS, JsonLineParser, KeyValueParser, LineParser, Reading

__all__ = ["PARSERS", "JsonLineParser", "KeyValueParser", "LineParser", "Reading"]
