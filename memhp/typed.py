"""A YAML file to typed objects through msgspec, every problem at its ``file:line:column``.

The file is composed into PyYAML's node tree (never constructed blindly: only
the plain YAML types, nesting at most ``max_depth``), turned into plain data
while a path -> node index is kept, and converted by ``msgspec.convert``
(strict: no string for a number, no float for an integer, unknown keys and
missing keys refused, the bounds declared on the type with ``msgspec.Meta``).
msgspec names the first problem by its path (``$.rules[0].cooldown``); the
index turns it back into the node's position.  To report every problem at
once (up to MAX_PROBLEMS), the offending value is dropped and the conversion
runs again.

Field metadata, in ``Meta(extra=...)``:

- ``parse``: turns a YAML scalar of one of the Python types in ``yaml`` into
  the field's value before msgspec sees it (a duration ``"30s"`` into 30.0),
  raising ValueError; ``kinds`` names those types for the error when the YAML
  holds something else;
- ``error``: the message when a bound or pattern of the field is not met;
  ``at_most``: the message when only its upper bound is not met.
"""

from __future__ import annotations

import enum
import math
import re
import types
import typing
from typing import Any

import msgspec
import yaml

Path = tuple[str | int, ...]
MAX_PROBLEMS = 100  # each retry converts the whole document: bounded for a huge broken file

_TAG_KIND = {
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean (true/false)",
    "tag:yaml.org,2002:str": "a string",
    "tag:yaml.org,2002:null": "null",
}
_WANT = {int: "an integer", float: "a number", bool: "a boolean (true/false)", str: "a string"}
# Tags a file may carry (explicitly or resolved): the plain YAML types only.
_ALLOWED_TAGS = frozenset(_TAG_KIND) | {"tag:yaml.org,2002:seq", "tag:yaml.org,2002:map", "!"}
_SKIP = object()  # a value already reported while reading the YAML: not given to msgspec


class YAMLProblem(ValueError):
    """The text is not YAML memhp reads (syntax, a tag, nesting); the message has the position."""


class _Unsupported:
    """A scalar of another YAML type (timestamp, ...): never constructed, always a type error."""


def where(filename: str, mark: Any) -> str:
    return f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark is not None else filename


def compose(text: str, filename: str, max_depth: int) -> yaml.Node | None:
    """The node tree of ``text``; YAMLProblem for a syntax error, a tag other than the plain
    YAML types (``!!python/name``, ``!!binary``, local ``!tags``) or nesting deeper than
    ``max_depth`` (PyYAML's composer recurses: 200k levels would crash it)."""
    try:
        depth = 0
        for ev in yaml.parse(text, Loader=yaml.SafeLoader):
            tag = getattr(ev, "tag", None)
            implicit = getattr(ev, "implicit", None)
            explicit = tag is not None and not (isinstance(implicit, tuple) and implicit[0]) and implicit is not True
            if explicit and tag not in _ALLOWED_TAGS:
                raise YAMLProblem(
                    f"{where(filename, ev.start_mark)}: YAML tag {tag!r} is not allowed (plain YAML values only)"
                )
            if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > max_depth:
                    raise YAMLProblem(f"{where(filename, ev.start_mark)}: nested deeper than {max_depth} levels")
            elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        raise YAMLProblem(f"{where(filename, e.problem_mark)}: YAML syntax: {e.problem}") from None
    except yaml.YAMLError as e:
        raise YAMLProblem(f"{filename}: YAML: {e}") from None


# --- types ------------------------------------------------------------------------------------


def unwrap(tp: Any) -> tuple[Any, msgspec.Meta | None]:
    """``Annotated[X, Meta] | None`` -> (X, Meta)."""
    meta = None
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            meta = next((m for m in tp.__metadata__ if isinstance(m, msgspec.Meta)), meta)
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            inner = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(inner) != 1:
                return tp, meta
            tp = inner[0]
        else:
            return tp, meta


def is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _fields(tp: Any) -> dict[str, msgspec.structs.FieldInfo] | None:
    return {f.name: f for f in msgspec.structs.fields(tp)} if is_struct(tp) else None


def _child(tp: Any, part: str | int) -> Any:
    base, _ = unwrap(tp)
    if isinstance(part, int):
        args = typing.get_args(base)
        return args[0] if typing.get_origin(base) is tuple and args else None
    fields = _fields(base)
    if fields is not None:
        return fields[part].type if part in fields else None
    args = typing.get_args(base)
    return args[1] if typing.get_origin(base) is dict and len(args) == 2 else None


def type_at(tp: Any, path: Path) -> Any:
    for part in path:
        tp = _child(tp, part)
    return tp


def _extra(meta: msgspec.Meta | None) -> dict[str, Any]:
    return dict(meta.extra or {}) if meta is not None else {}


def dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(top level)"


# --- the document -----------------------------------------------------------------------------


class Document:
    """Plain data of one YAML file for one type, the index of its nodes, and its problems."""

    def __init__(self, root: yaml.Node, tp: Any, filename: str) -> None:
        self.filename = filename
        self.type = tp
        self.problems: list[str] = []
        self.index: dict[Path, yaml.Node] = {(): root}
        self._reported: set[Path] = set()
        self._removed: dict[Path, list[int]] = {}  # list path -> original indices dropped
        self._constructor = yaml.SafeLoader("")
        self.partial: Any = None
        self.data = self._plain(root, tp, ())

    def error(self, node: yaml.Node, key: str, msg: str) -> None:
        self.problems.append(f"{where(self.filename, node.start_mark)}: {key}: {msg}")

    def _report(self, path: Path, node: yaml.Node, msg: str) -> None:
        self._reported.add(path)
        # An item of a list of values is named by its list, an item of a list of mappings by its index.
        item = path and isinstance(path[-1], int) and not is_struct(unwrap(type_at(self.type, path))[0])
        self.error(node, dotted(path[:-1] if item else path), msg)

    # Reading the YAML: keys, duplicates, unknown keys, units and finite numbers.

    def _plain(self, node: yaml.Node, tp: Any, path: Path) -> Any:
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, tp, path)
        if isinstance(node, yaml.SequenceNode):
            out = []
            for i, item in enumerate(node.value):
                self.index[(*path, i)] = item
                out.append(self._plain(item, _child(tp, i), (*path, i)))
                if out[-1] is _SKIP:  # the first bad item ends the list, as one problem
                    return _SKIP
            return out
        if node.tag not in _TAG_KIND:
            return _Unsupported()
        value = self._constructor.construct_object(node, deep=True)
        base, meta = unwrap(tp)
        extra = _extra(meta)
        try:
            if "parse" in extra and type(value) in extra["yaml"]:
                return extra["parse"](value)
        except ValueError as e:
            self._report(path, node, str(e))
            return _SKIP
        if base is float and isinstance(value, float) and not math.isfinite(value):
            # .nan passes every comparison as false: a bound such as `gt=0` would let it through
            self._report(path, node, f"must be a finite number, got {_show(node)}")
            return _SKIP
        return value

    def _mapping(self, node: yaml.MappingNode, tp: Any, path: Path) -> dict[str, Any]:
        fields = _fields(unwrap(tp)[0])
        out: dict[str, Any] = {}
        seen: dict[str, yaml.Node] = {}
        for knode, vnode in node.value:
            name = knode.value if isinstance(knode, yaml.ScalarNode) and knode.tag == "tag:yaml.org,2002:str" else None
            if name is None:
                self.error(knode, dotted(path), f"keys must be strings, got {knode.value!r}")
                continue
            sub = (*path, name)
            if name in seen:
                self._report(sub, knode, f"duplicate key (first at line {seen[name].start_mark.line + 1})")
                continue
            seen[name] = knode
            if fields is not None and name not in fields:
                self._report(sub, knode, "unknown key" + _suggest(name, fields))
                continue
            self.index[sub] = vnode
            value = self._plain(vnode, _child(tp, name), sub)
            if value is not _SKIP:
                out[name] = value
        return out

    # Converting: msgspec finds the problems, one at a time.

    def convert(self) -> Any:
        """The typed object, or None when there were problems (in ``problems``).

        Either way ``partial`` holds what converted once the offending values were dropped (None if
        nothing did), so checks across fields can still run on the rest in the same pass."""
        self.partial = None
        for _ in range(MAX_PROBLEMS):
            try:
                out = msgspec.convert(self.data, self.type, strict=True)
                self.partial = out
                return None if self.problems else out
            except msgspec.ValidationError as e:
                text, _, at = str(e).rpartition(" - at `")
                msg, path = (text, self._original(at[:-1])) if text else (str(e), ())
            if not self._explain(msg, path) or not path:
                return None
        self.problems.append(f"{self.filename}: more problems not shown (fix the first {MAX_PROBLEMS})")
        return None

    def dropped(self, path: Path) -> bool:
        """Whether the value at ``path`` (a path in the file) or what holds it was reported and dropped."""
        return any(path[:n] in self._reported for n in range(1, len(path) + 1))

    def original_index(self, path: Path, i: int) -> int:
        """The file's index of item ``i`` of the converted list at ``path`` (items may have been dropped)."""
        for r in sorted(self._removed.get(path, ())):
            i += r <= i
        return i

    def _original(self, at: str) -> Path:
        path: Path = ()
        for name, index in re.findall(r"\.(\w+)|\[(\d+)\]", at):
            if name:
                path = (*path, name)
                continue
            path = (*path, self.original_index(path, int(index)))
        return path

    def _explain(self, msg: str, path: Path) -> bool:
        """Report ``msg`` (unless reported already) and drop the value; False: nothing to drop."""
        node = self.index.get(path, self.index[()])
        m = re.fullmatch(r"Object missing required field `(\w+)`", msg)
        if m:
            fields = _fields(unwrap(type_at(self.type, path))[0]) or {}
            given = self._get(path)
            for f in fields.values():
                sub = (*path, f.name)
                if f.required and f.name not in given and sub not in self._reported:
                    self._report(sub, node, "required key is missing")
            return self._drop(path)
        if path not in self._reported:
            self._report(path, node, self._message(msg, path, node))
        # A bad item of a list of values ends that list, as one problem.
        if path and isinstance(path[-1], int) and not is_struct(unwrap(type_at(self.type, path))[0]):
            path = path[:-1]
        return self._drop(path)

    def _message(self, msg: str, path: Path, node: yaml.Node) -> str:
        base, meta = unwrap(type_at(self.type, path))
        extra = _extra(meta)
        if msg.endswith("got `null`"):
            return "must not be null"
        if re.fullmatch(r"Expected `[^`]*`, got `[^`]*`|Invalid enum value .*", msg, re.DOTALL):
            got = _kind(node)
            if isinstance(base, type) and issubclass(base, enum.Enum):
                return f"must be one of {', '.join(str(m.value) for m in base)}, got {_show(node) or got}"
            if "type_error" in extra:
                return f"{extra['type_error']}, got {got}"
            if "kinds" in extra:
                return f"must be {extra['kinds']}, got {got}"
            scalar = base in _WANT
            return f"must be {_want(base)}, got {got} {_show(node) if scalar else ''}".rstrip()
        bound = re.fullmatch(r"Expected `\w+` (>=|>|<=|<) (\S+)", msg)
        if bound:
            op, limit = bound.groups()
            if op in ("<=", "<") and "at_most" in extra:
                return extra["at_most"]
            if "error" in extra:
                return extra["error"]
            if op == ">=" and float(limit) == 0:
                return "must not be negative"
            if op == ">=" and base is int:  # msgspec says `>= 1` for an int declared `gt=0`
                return f"must be greater than {int(limit) - 1}"
            words = {">": "must be greater than", ">=": "must be at least", "<=": "must be at most"}
            return f"{words.get(op, 'must be less than')} {_number(limit)}"
        if msg.startswith("Expected `str`") and "error" in extra:  # a pattern or a length
            return extra["error"]
        return msg  # a dec_hook's own message

    def _get(self, path: Path) -> Any:
        value = self.data
        for part in self._current(path):
            value = value[part]
        return value

    def _current(self, path: Path) -> Path:
        out: Path = ()
        for i, part in enumerate(path):
            if isinstance(part, int):
                part -= sum(r < part for r in self._removed.get(path[:i], ()))
            out = (*out, part)
        return out

    def _drop(self, path: Path) -> bool:
        self._reported.add(path)
        if not path:
            return False
        parent = self._get(path[:-1])
        last = self._current(path)[-1]
        try:
            del parent[last]
        except (KeyError, IndexError, TypeError):
            return False
        if isinstance(path[-1], int):
            self._removed.setdefault(path[:-1], []).append(path[-1])
        return True


def _want(base: Any) -> str:
    if is_struct(base) or typing.get_origin(base) is dict:
        return "a mapping"
    if typing.get_origin(base) is tuple:
        return "a list"
    return _WANT.get(base, "valid")


def _number(text: str) -> str:
    value = float(text)
    return f"{value:g}" if value.is_integer() else text


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return _TAG_KIND.get(node.tag, "an unsupported YAML type")


def _show(node: yaml.Node) -> str:
    return f"({node.value!r})" if isinstance(node, yaml.ScalarNode) else ""


def _suggest(name: str, fields: dict[str, Any]) -> str:
    close = [n for n in fields if n.replace("_", "") == name.replace("_", "").replace("-", "")]
    return f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(fields)}"
