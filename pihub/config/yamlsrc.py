"""YAML loading with source positions, ``!env``/``!file`` secrets and located problems.

:func:`parse_document` turns YAML text into plain Python values (dicts, lists, str, int,
float, bool, None, dates) and keeps the composed node tree beside them, so that any value
or mapping key can later be located by its *path*, a tuple of mapping keys and list
indices: ``("event.hook.door", "then", 2, "args", "x")``. Locating is lazy (it walks the
node tree on demand), so anchors and aliases cost nothing extra: an alias yields the
*same* Python object as its anchor (as PyYAML does) and is located at the anchor. A
"billion laughs" document is refused before it is built (see the limits below), because
the code that walks values (schemas, templates) sees an alias expanded.

Only these tags are accepted; every other tag (``!foo``, ``!!python/object/apply:...``,
``!!set``, ``!!binary``...) is a located problem and its node is never constructed:

* the plain YAML scalars, lists and mappings (and the ``<<`` merge key);
* ``!env NAME``: the value of environment variable ``NAME``; a missing variable is a
  problem naming it. ``!env [NAME, default]``: ``default`` when ``NAME`` is unset (a
  string default is wrapped in :class:`Secret` too; other defaults keep their YAML type);
* ``!file PATH``: the content of a UTF-8 text file (at most :data:`MAX_FILE_BYTES`),
  stripped of surrounding whitespace; a relative ``PATH`` is relative to the directory of
  the YAML file that holds the tag, and ``~`` is expanded.

Values from ``!env`` and ``!file`` are :class:`Secret` strings, redacted whenever they are
shown. A mapping that repeats a key is a problem (YAML itself silently keeps the last).
Syntax errors are located with the marks of PyYAML's ``MarkedYAMLError``.

Problems are collected, never raised: :attr:`Document.problems` holds every one found,
each a :class:`~pihub.errors.Problem` with a 1-based line and column.

**What a config may cost.** A config is hostile input as far as memory and time go (a
YAML alias bomb is 800 bytes), so every limit below is checked *before* the work it
bounds, and passing one is a located problem, found in well under a second (with
libyaml; PyYAML's pure-Python parser, used only without it, is about 15 times slower):

* only regular files are read (:func:`read_regular`: a FIFO, device, socket or directory
  is refused before any read, and nothing blocks on opening it), at most
  :data:`MAX_CONFIG_BYTES` of them (``!file``: :data:`MAX_FILE_BYTES`);
* a document holds at most :data:`MAX_CONFIG_NODES` values *with aliases expanded*, and
  nests at most :data:`MAX_CONFIG_DEPTH` lists/mappings deep. Both are counted on the
  parser's event stream before anything is composed (an alias adds the size of its
  anchor, remembered, never re-walked), so a bomb fails after at most that many events.
  What is built afterwards still shares aliased objects, but every consumer that walks
  the tree (schema checks, template compilation, rendering) sees at most that many
  values.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, TypeGuard

import yaml
from yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, ScalarEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pihub.errors import Problem, format_path

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_NODES",
    "MAX_FILE_BYTES",
    "Document",
    "Location",
    "PositionLoader",
    "Secret",
    "parse_document",
    "read_document",
    "read_regular",
]

#: Largest file ``!file`` reads, in bytes; secrets and certificates are far smaller.
MAX_FILE_BYTES: Final = 1 << 20

#: Largest config file, in bytes (each included file too). A 5,000-line config is about
#: 170 KB (pihub's demo config: 33 bytes a line).
MAX_CONFIG_BYTES: Final = 1 << 20

#: Most values a config may hold, in all its files together, counting every scalar, list
#: and mapping, and an alias as the whole value it stands for. A 5,000-line config holds
#: about 15,000 (the demo config: 3 a line).
MAX_CONFIG_NODES: Final = 100_000

#: Deepest nesting of lists and mappings in a config; hooks with nested procedure steps
#: reach about 12.
MAX_CONFIG_DEPTH: Final = 64

_YAML: Final = "tag:yaml.org,2002:"
_MAP_TAG: Final = _YAML + "map"
_SEQ_TAG: Final = _YAML + "seq"
_MERGE_TAG: Final = _YAML + "merge"
_SCALAR_TAGS: Final = frozenset(_YAML + t for t in ("str", "int", "float", "bool", "null", "timestamp"))
_ENV_TAG: Final = "!env"
_FILE_TAG: Final = "!file"
_ALLOWED_TAGS: Final = "!env, !file"


class Secret(str):
    """A string from ``!env`` or ``!file``, redacted whenever it is shown.

    ``repr()``, ``str()`` and ``format()`` (so f-strings, ``%s`` and ``str.format``) give
    ``***``. Everything else sees the real text, because a Secret *is* a str: ``==``,
    hashing, ``in``, concatenation (``"Bearer " + token``), ``.encode()``, ``json.dumps``
    and C libraries that read the string buffer. So a Secret can be handed to a library
    unchanged; call :meth:`reveal` when a plain ``str`` is needed (e.g. before ``str()``
    would be applied to it). Slicing and string methods return plain, unredacted ``str``.
    """

    __slots__ = ()

    def reveal(self) -> str:
        """Return the real text as a plain ``str`` (not redacted)."""
        return str.__str__(self)

    def __repr__(self) -> str:
        return "'***'"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return format("***", spec)


class Location(NamedTuple):
    """Where something is in a YAML file: ``file`` and 1-based ``line``/``col``.

    ``Location("", 0, 0)`` means "unknown".
    """

    file: str
    line: int
    col: int


UNKNOWN: Final = Location("", 0, 0)


@dataclass(eq=False)
class Document:
    """One parsed YAML file: its plain value, its problems and its node tree.

    Attributes:
        file: the file name as it is shown in problems.
        value: the document's value (None for an empty document, or when it has a syntax
            error).
        problems: every problem found while parsing, located.
        root: the composed node tree, or None.
        nodes: how many values the document holds, aliases expanded (see
            :data:`MAX_CONFIG_NODES`); counted up to the first value past the limit.
    """

    file: str
    value: Any = None
    problems: list[Problem] = field(default_factory=list)
    root: Node | None = None
    nodes: int = 0
    _pairs: dict[int, dict[Hashable, tuple[Node, Node]]] = field(default_factory=dict, repr=False)

    def locate(self, path: tuple[Hashable, ...], *, at_key: bool = False) -> Location:
        """Locate the value (or, with ``at_key``, the mapping key) at ``path``.

        Rules: an index ``0`` into a mapping or scalar stands for the node itself, because
        a single mapping is accepted where a one-element list is expected (a hook's
        ``then``). When ``path`` does not exist in full, the deepest existing prefix is
        located, at its key when it is a mapping entry: a missing required key is thus
        shown at the key of the mapping that lacks it. A value reached through an alias is
        located at its anchor.

        Args:
            path: mapping keys and list indices from the document root.
            at_key: locate the key naming the last path element instead of its value.

        Returns:
            The location; the document start when ``path`` is empty, :data:`UNKNOWN`
            when the document has no node tree.
        """
        node = self.root
        if node is None:
            return Location(self.file, 1, 1) if self.file else UNKNOWN
        key_node: Node | None = None
        found = True
        for part in path:
            if isinstance(node, MappingNode):
                pairs = self._pairs.get(id(node), {})
                if hashable(part) and part in pairs:
                    key_node, node = pairs[part]
                    continue
            elif isinstance(node, SequenceNode) and _is_index(part) and 0 <= part < len(node.value):
                key_node, node = None, node.value[part]
                continue
            if _is_index(part) and part == 0 and not isinstance(node, SequenceNode):
                key_node = None
                continue
            found = False
            break
        mark = key_node.start_mark if key_node is not None and (at_key or not found) else node.start_mark
        return Location(self.file, mark.line + 1, mark.column + 1)


def hashable(value: object) -> bool:
    """True if ``value`` can be a dict key."""
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _is_index(part: object) -> TypeGuard[int]:
    """True for a list index (an int that is not a bool)."""
    return isinstance(part, int) and not isinstance(part, bool)


def _short_tag(tag: str) -> str:
    """``tag:yaml.org,2002:int`` -> ``!!int``, as the user wrote it."""
    return "!!" + tag[len(_YAML):] if tag.startswith(_YAML) else tag


#: What each explicit scalar tag accepts, for the message of a value it refuses.
_SCALAR_FORMS: Final = {
    "!!int": (f"an integer of at most {sys.get_int_max_str_digits() or 'any number of'} digits:"
              " decimal, 0x hex, 0o octal or 0b binary"),
    "!!float": "a number such as 1.5, -2e3, .inf or .nan",
    "!!bool": "true or false",
    "!!null": "null, ~ or nothing",
    "!!timestamp": "a date such as 2024-05-01 or a time such as 2024-05-01T12:00:00Z",
}

#: Longest scalar a problem message shows whole; a longer one is shown as head...tail.
_SHOWN_CHARS: Final = 40


def _show_scalar(text: str) -> str:
    """``text`` quoted for a message; past :data:`_SHOWN_CHARS` as head...tail with its length.

    ``'100000000000000000000000000000...0000000000' (5001 digits)``: a 5,000-digit number
    must not become a 5,000-character message.
    """
    if len(text) <= _SHOWN_CHARS:
        return repr(text)
    head, tail = text[:_SHOWN_CHARS * 3 // 4], text[-(_SHOWN_CHARS // 4):]
    digits = text.lstrip("+-").replace("_", "")
    size = f"{len(digits)} digits" if digits.isdigit() else f"{len(text)} characters"
    return f"{(head + '...' + tail)!r} ({size})"


def _kind(node: Node) -> str:
    """``a mapping``, ``a list`` or ``a scalar``, for messages."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return "a scalar"


_NODES_LIMIT: Final = (f"{MAX_CONFIG_NODES} values (the most a config may hold, in all its files, "
                       f"counting each alias as the values it stands for)")
_BAD: Final = object()  # an unusable mapping key; the entry is skipped
_BUILDING: Final = object()  # marks a collection whose construction is in progress


def _make_loader(base: type) -> type:
    """Build the position-recording loader class on ``base`` (CSafeLoader or SafeLoader)."""

    class _Loader(base):  # type: ignore[misc]  # base is CSafeLoader or SafeLoader, chosen at run time
        """A safe loader that builds plain values from the node tree and records problems.

        Only the node-composing half of the base loader is used (``get_single_node``) and
        the scalar constructors of ``SafeConstructor``; the object tree is built here, so
        that every problem is collected instead of the first one raised.
        """

        def __init__(self, text: str, file: str, *, environ: Mapping[str, str] | None = None,
                     max_nodes: int = MAX_CONFIG_NODES) -> None:
            """Prepare to load ``text``.

            Args:
                text: the YAML source.
                file: the name shown in problems; its directory anchors relative ``!file``
                    paths.
                environ: the variables ``!env`` reads; ``os.environ`` when None.
                max_nodes: the most values (aliases expanded) the document may hold.
            """
            super().__init__(text)
            self.text = text
            self.file = file
            self.max_nodes = max_nodes
            self.environ: Mapping[str, str] = os.environ if environ is None else environ
            self.problems: list[Problem] = []
            self.pairs: dict[int, dict[Hashable, tuple[Node, Node]]] = {}
            self._built: dict[int, Any] = {}

        def load_document(self) -> Document:
            """Compose and build the single document of the stream.

            Returns:
                The document; syntax errors are in its problems, never raised.
            """
            doc = Document(self.file)
            try:
                doc.nodes = self._count_nodes()
                if doc.nodes > self.max_nodes or self.problems:
                    return doc
                try:
                    root = self.get_single_node()
                except yaml.MarkedYAMLError as e:
                    self._syntax_problem(e)
                    return doc
                except yaml.YAMLError as e:
                    line, col = _reader_position(self.text, e)
                    self.problems.append(Problem("", f"invalid yaml: {_reader_reason(e)}", self.file, line, col))
                    return doc
                if root is not None:
                    doc.root = root
                    doc.value = self._build(root, ())
                return doc
            except RecursionError:
                self.problems.append(Problem("", "invalid yaml: nested too deeply", self.file, 1, 1))
                doc.root = doc.value = None
                return doc
            finally:
                doc.problems = sorted(self.problems, key=lambda p: (p.line, p.col))
                doc._pairs = self.pairs
                self.dispose()

        def _count_nodes(self) -> int:
            """Count the values of the text on a parser of its own, before composing.

            An alias counts as the size of its anchor's value (remembered when that value
            ends), so the count is of the expanded tree while the work is one step per
            parser event. Stops at the first value past :attr:`max_nodes` or the first
            collection deeper than :data:`MAX_CONFIG_DEPTH`, recording a problem there.
            A syntax error ends the count quietly: composing reports it, located.

            Returns:
                The values counted (more than :attr:`max_nodes` when that limit stopped it).
            """
            parser = base(self.text)
            sizes: dict[str | None, int] = {}  # anchor -> expanded size of its value
            open_: list[tuple[int, str | None]] = []  # (count before it, anchor) per open collection
            total = 0
            try:
                while parser.check_event():
                    event = parser.get_event()
                    if isinstance(event, ScalarEvent):
                        total += 1
                        if event.anchor is not None:
                            sizes[event.anchor] = 1
                    elif isinstance(event, AliasEvent):
                        size = sizes.get(event.anchor, 1)
                        total += size
                        if total > self.max_nodes:
                            self._event_problem(event, f"alias *{event.anchor} stands for {size} values, which "
                                                       f"takes the config past {_NODES_LIMIT}")
                            return total
                    elif isinstance(event, CollectionStartEvent):
                        if len(open_) >= MAX_CONFIG_DEPTH:
                            self._event_problem(event, f"lists and mappings nested more than {MAX_CONFIG_DEPTH} "
                                                       f"deep (the most a config may nest)")
                            return total
                        open_.append((total, event.anchor))
                        total += 1
                    elif isinstance(event, CollectionEndEvent):
                        before, anchor = open_.pop()
                        if anchor is not None:
                            sizes[anchor] = total - before
                        continue
                    else:
                        continue
                    if total > self.max_nodes:
                        self._event_problem(event, f"too many values: this one takes the config past {_NODES_LIMIT}")
                        return total
            except yaml.YAMLError:
                pass
            finally:
                parser.dispose()
            return total

        def _event_problem(self, event: Any, message: str) -> None:
            """Record a problem at a parser event's start."""
            mark = event.start_mark
            self.problems.append(Problem("", message, self.file, mark.line + 1, mark.column + 1))

        def _syntax_problem(self, e: yaml.MarkedYAMLError) -> None:
            """Record a syntax error at PyYAML's problem mark, naming its context."""
            mark = e.problem_mark or e.context_mark
            message = f"invalid yaml: {e.problem or e.context or 'syntax error'}"
            if e.problem and e.context:
                where = ""
                if e.context_mark is not None and e.context_mark is not mark:
                    where = f" at line {e.context_mark.line + 1}, col {e.context_mark.column + 1}"
                message += f" ({e.context}{where})"
            line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
            self.problems.append(Problem("", message, self.file, line, col))

        def _problem(self, node: Node, path: tuple[Hashable, ...], message: str) -> None:
            """Record a problem located at ``node``'s start."""
            mark = node.start_mark
            self.problems.append(
                Problem(format_path(path), message, self.file, mark.line + 1, mark.column + 1))

        def _build(self, node: Node, path: tuple[Hashable, ...]) -> Any:
            """Build the plain value of ``node``; aliases yield the anchor's object."""
            nid = id(node)
            if nid in self._built:
                value = self._built[nid]
                if value is _BUILDING:
                    self._problem(node, path, "recursive alias: a collection cannot contain itself")
                    return None
                return value
            tag = node.tag
            if tag == _ENV_TAG:
                value = self._env(node, path)
            elif tag == _FILE_TAG:
                value = self._file(node, path)
            elif isinstance(node, MappingNode) and tag == _MAP_TAG:
                self._built[nid] = _BUILDING
                value = self._mapping(node, path)
            elif isinstance(node, SequenceNode) and tag == _SEQ_TAG:
                self._built[nid] = _BUILDING
                value = [self._build(item, (*path, i)) for i, item in enumerate(node.value)]
            elif isinstance(node, ScalarNode) and tag in _SCALAR_TAGS:
                value = self._scalar(node, path)
            elif tag in _SCALAR_TAGS or tag in (_MAP_TAG, _SEQ_TAG):
                self._problem(node, path, f"tag {_short_tag(tag)!r} does not apply to {_kind(node)}")
                value = None
            else:
                self._problem(node, path, f"unknown tag {_short_tag(tag)!r} (allowed tags: {_ALLOWED_TAGS})")
                value = None
            self._built[nid] = value
            return value

        def _scalar(self, node: ScalarNode, path: tuple[Hashable, ...]) -> Any:
            """Construct a plain scalar with SafeConstructor's own constructor."""
            try:
                return self.yaml_constructors[node.tag](self, node)
            except (yaml.YAMLError, ValueError, TypeError, AttributeError, KeyError):
                # explicit tags such as ``!!int abc`` (``!!bool maybe``: KeyError) fail inside
                # SafeConstructor, and so does an int past Python's digit limit for int(str)
                tag = _short_tag(node.tag)
                self._problem(node, path, f"{_show_scalar(node.value)} is not a valid {tag}"
                                          f" (allowed: {_SCALAR_FORMS.get(tag, 'a plain value')})")
                return None

        def _mapping(self, node: MappingNode, path: tuple[Hashable, ...]) -> dict[Any, Any]:
            """Build a dict; its key/value nodes are indexed for :meth:`Document.locate`."""
            pairs = self._pairs_of(node, path)
            self.pairs[id(node)] = pairs
            return {key: self._build(vnode, (*path, key)) for key, (_, vnode) in pairs.items()}

        def _pairs_of(self, node: MappingNode, path: tuple[Hashable, ...]) -> dict[Hashable, tuple[Node, Node]]:
            """The effective ``key -> (key node, value node)`` of a mapping, merges applied."""
            explicit: dict[Hashable, tuple[Node, Node]] = {}
            merged: dict[Hashable, tuple[Node, Node]] = {}
            for knode, vnode in node.value:
                if knode.tag == _MERGE_TAG:
                    for key, pair in self._merge_sources(vnode, path).items():
                        merged.setdefault(key, pair)
                    continue
                key = self._key(knode, path)
                if key is _BAD:
                    continue
                if key in explicit:
                    first = explicit[key][0].start_mark
                    self._problem(knode, path, f"duplicate key {key!r} (first at line {first.line + 1}, "
                                               f"col {first.column + 1}); yaml would silently keep the last")
                explicit[key] = (knode, vnode)
            # explicit keys win over merged ones, as in YAML's merge-key spec
            return {**merged, **explicit} if merged else explicit

        def _merge_sources(self, vnode: Node, path: tuple[Hashable, ...]) -> dict[Hashable, tuple[Node, Node]]:
            """The pairs a ``<<`` merge key brings in."""
            sources = vnode.value if isinstance(vnode, SequenceNode) and vnode.tag == _SEQ_TAG else [vnode]
            out: dict[Hashable, tuple[Node, Node]] = {}
            for source in sources:
                if not (isinstance(source, MappingNode) and source.tag == _MAP_TAG):
                    self._problem(source, path, f"merge key '<<' takes a mapping or a list of mappings, "
                                                f"not {_kind(source)}")
                    continue
                self._build(source, path)
                for key, pair in self.pairs.get(id(source), {}).items():
                    out.setdefault(key, pair)  # earlier sources win, per the merge-key spec
            return out

        def _key(self, knode: Node, path: tuple[Hashable, ...]) -> Any:
            """Build a mapping key, or return _BAD when it cannot be one."""
            if not isinstance(knode, ScalarNode):
                self._problem(knode, path, f"mapping keys must be scalars, not {_kind(knode)}")
                return _BAD
            key = self._build(knode, path)
            if not hashable(key):
                return _BAD
            return key

        def _env(self, node: Node, path: tuple[Hashable, ...]) -> Any:
            """Resolve ``!env NAME`` or ``!env [NAME, default]``."""
            default: Any = _BAD
            if isinstance(node, ScalarNode):
                name: Any = node.value
            elif isinstance(node, SequenceNode) and len(node.value) == 2:
                name = self._build(node.value[0], (*path, 0))
                default = self._build(node.value[1], (*path, 1))
            else:
                self._problem(node, path, f"!env takes a variable name or [name, default], not {_kind(node)}"
                              + (f" of {len(node.value)} items" if isinstance(node, SequenceNode) else ""))
                return None
            if not isinstance(name, str) or not name or "=" in name or "\0" in name:
                self._problem(node, path, f"!env needs an environment variable name, not {name!r}")
                return None
            value = self.environ.get(name)
            if value is not None:
                return Secret(value)
            if default is _BAD:
                self._problem(node, path, f"environment variable {name!r} is not set "
                                          f"(use !env [{name}, default] to give a default)")
                return None
            return Secret(default) if isinstance(default, str) else default

        def _file(self, node: Node, path: tuple[Hashable, ...]) -> Any:
            """Resolve ``!file PATH`` to the file's stripped text."""
            if not isinstance(node, ScalarNode) or not node.value:
                self._problem(node, path, f"!file takes a file path, not {_kind(node)}")
                return None
            target = os.path.expanduser(node.value)
            if not os.path.isabs(target):
                target = os.path.join(os.path.dirname(self.file), target)
            try:
                data = read_regular(target, MAX_FILE_BYTES)
            except OSError as e:
                self._problem(node, path, f"cannot read !file {target!r}: {_strerror(e)}")
                return None
            if len(data) > MAX_FILE_BYTES:
                self._problem(node, path, f"!file {target!r} is larger than {MAX_FILE_BYTES} bytes")
                return None
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError:
                self._problem(node, path, f"!file {target!r} is not utf-8 text")
                return None
            return Secret(text.strip())

    return _Loader


_KINDS: Final = ((stat.S_ISFIFO, "a fifo"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                 (stat.S_ISSOCK, "a socket"))


def _not_regular(path: str, mode: int) -> OSError:
    """The error for a path that is not a regular file; its strerror names what it is."""
    if stat.S_ISDIR(mode):
        return IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    kind = next((name for test, name in _KINDS if test(mode)), "a special file")
    return OSError(errno.EINVAL, f"not a regular file ({kind})", path)


def read_regular(path: str, limit: int) -> bytes:
    """Read at most ``limit + 1`` bytes of the regular file at ``path``.

    ``path`` is checked with ``os.stat`` before it is opened, so a device is never opened,
    then opened non-blocking and checked again with ``fstat`` (it may have been replaced
    in between), so a FIFO can neither block the open nor a read.

    Args:
        path: the file; symbolic links are followed.
        limit: the size the caller accepts, in bytes; one byte more is read so that the
            caller can tell a larger file (``len(result) > limit``) without reading it all.

    Returns:
        The first ``limit + 1`` bytes of the file, or all of it when it is smaller.

    Raises:
        OSError: the file cannot be opened or read, or it is not a regular file (a
            directory, FIFO, device or socket; ``strerror`` says which).
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise _not_regular(path, mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode)
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _strerror(e: OSError) -> str:
    """The OS reason, lower-case (``no such file or directory``)."""
    return (e.strerror or str(e)).lower()


def _reader_position(text: str, e: yaml.YAMLError) -> tuple[int, int]:
    """1-based line and column of a ReaderError (libyaml counts bytes, PyYAML characters)."""
    pos = getattr(e, "position", None)
    if not isinstance(pos, int):
        return 1, 1
    if getattr(e, "encoding", "unicode") != "unicode":
        pos = len(text.encode("utf-8")[:pos].decode("utf-8", "ignore"))
    return text.count("\n", 0, pos) + 1, pos - (text.rfind("\n", 0, pos) + 1) + 1


def _reader_reason(e: yaml.YAMLError) -> str:
    """The message of a ReaderError (a bad character in the stream)."""
    reason = getattr(e, "reason", None)
    char = getattr(e, "character", None)
    if isinstance(char, int):
        return f"unacceptable character #x{char:04x}: {reason}"
    return str(reason or e)


#: The loader class: on CSafeLoader when PyYAML has libyaml, else on the pure SafeLoader.
PositionLoader: Final[type] = _make_loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader))
_PurePositionLoader: Final[type] = _make_loader(yaml.SafeLoader)


def parse_document(data: str | bytes, file: str, *, environ: Mapping[str, str] | None = None,
                   pure: bool = False, max_nodes: int = MAX_CONFIG_NODES) -> Document:
    """Parse YAML source into a :class:`Document`; never raises for bad content.

    Args:
        data: the YAML source; bytes are decoded as UTF-8 (a BOM is allowed). More than
            :data:`MAX_CONFIG_BYTES` (of bytes, or of characters for a str) is a problem
            and is not parsed.
        file: the name shown in problems; its directory anchors relative ``!file`` paths.
        environ: the variables ``!env`` reads; ``os.environ`` when None.
        pure: use the pure-Python SafeLoader base even when libyaml is available (tests).
        max_nodes: the part of :data:`MAX_CONFIG_NODES` left for this document (the
            loader shares the budget between included files); more values is a problem,
            located at the value that passes it, and the document is not built.

    Returns:
        The document, with every problem found in :attr:`Document.problems`.
    """
    if len(data) > MAX_CONFIG_BYTES:
        return Document(file, problems=[Problem(
            "", f"the file is larger than {MAX_CONFIG_BYTES} bytes (the most a config file may hold); "
                f"split it with include", file, 1, 1)])
    if isinstance(data, bytes):
        raw = data
        try:
            data = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = raw.count(b"\n", 0, e.start) + 1
            col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
            return Document(file, problems=[Problem(
                "", f"invalid yaml: not utf-8 text (byte 0x{raw[e.start]:02x})", file, line, col)])
    try:
        loader = (_PurePositionLoader if pure else PositionLoader)(data, file, environ=environ, max_nodes=max_nodes)
    except yaml.YAMLError as e:  # the pure reader checks for bad characters up front
        line, col = _reader_position(data, e)
        return Document(file, problems=[Problem("", f"invalid yaml: {_reader_reason(e)}", file, line, col)])
    document: Document = loader.load_document()
    return document


def read_document(path: str, *, environ: Mapping[str, str] | None = None,
                  max_nodes: int = MAX_CONFIG_NODES) -> Document:
    """Read and parse the YAML file at ``path`` (see :func:`read_regular`).

    Args:
        path: the file to read; also the name shown in problems.
        environ: the variables ``!env`` reads; ``os.environ`` when None.
        max_nodes: see :func:`parse_document`.

    Returns:
        The document, with every problem found in :attr:`Document.problems`; a file larger
        than :data:`MAX_CONFIG_BYTES` is a problem (only one byte more is read).

    Raises:
        OSError: the file cannot be opened or read, or it is not a regular file.
    """
    return parse_document(read_regular(path, MAX_CONFIG_BYTES), path, environ=environ, max_nodes=max_nodes)
