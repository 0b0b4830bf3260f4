"""Loading configs: YAML I/O, ``--set`` overrides and type checking against the schema.

Loading checks unknown keys, types and ranges and raises :class:`ConfigError` naming the
key and the file. ``--set section.key=value`` overrides are applied to the raw mapping
before validation, so they are checked exactly like values from the file.

YAML is read by :func:`safe_yaml`: a file of at most :data:`MAX_CONFIG_BYTES` of UTF-8
text, PyYAML's safe loader (no tag ever constructs an object), no duplicate keys, nesting
and aliases bounded — a "billion laughs" file fails before it expands.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import stat
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from tumorscope.config.checks import ConfigError, _check, key_name, short
from tumorscope.config.schema import Config

MAX_CONFIG_BYTES = 1 << 20  # a config is a page of text; refused before it is parsed
MAX_ALIASES = 64  # ``*name`` references in one document
MAX_NODES = 100_000  # values in the document with every alias expanded
MAX_DEPTH = 32  # nesting of sections and lists, aliases expanded


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        _check(value in args, key, f"{short(value)} is not one of {list(args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {short(value)} does not match {_type_name(tp)}")
    if origin is tuple:
        _check(
            isinstance(value, list | tuple),
            key,
            f"expected a list, got {type(value).__name__} {short(value)}",
        )
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        _check(len(value) == len(args), key, f"expected {len(args)} items, got {len(value)}")
        return tuple(
            _coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin is dict:
        _check(isinstance(value, Mapping), key, f"expected a mapping, got {type(value).__name__}")
        kt, vt = args
        return {
            _coerce(k, kt, key): _coerce(v, vt, f"{key}.{key_name(k)}") for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _build(tp, value, key)
    if tp is bool:
        _check(isinstance(value, bool), key, f"expected true/false, got {short(value)}")
        return value
    if tp is int:
        _check(
            isinstance(value, int) and not isinstance(value, bool),
            key,
            f"expected an integer, got {short(value)}",
        )
        return value
    if tp is float:
        _check(
            isinstance(value, int | float) and not isinstance(value, bool),
            key,
            f"expected a number, got {short(value)}",
        )
        try:
            return float(value)
        except OverflowError:  # an int past 1.8e308
            raise ConfigError(f"{key}: {short(value)} is too large") from None
    if tp is str:
        _check(isinstance(value, str), key, f"expected a string, got {short(value)}")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _build(cls: type, raw: Any, prefix: str) -> Any:
    label = prefix or "config"
    _check(isinstance(raw, Mapping), label, f"expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(raw) - set(fields))
    if unknown:
        name = key_name(unknown[0])
        k = f"{prefix}.{name}" if prefix else name
        close = [n for n in fields if _similar(n, name)]
        hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {sorted(fields)}"
        raise ConfigError(f"{k}: unknown key{hint}")
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{prefix + '.' if prefix else ''}{missing[0]}: required key missing")
    return cls(**kwargs)


def _similar(a: str, b: str) -> bool:
    return difflib.SequenceMatcher(None, a, b).ratio() > 0.75


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys and counting aliases and nesting."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0
        self.depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _Refused(f"more than {MAX_ALIASES} aliases", self.peek_event().start_mark)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _Refused(
                    f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        node: MappingNode = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], ScalarNode] = {}
        for key, _ in node.value:
            if not isinstance(key, ScalarNode):
                continue  # a list or mapping as a key: the constructor refuses it
            seen = first.setdefault((key.tag, key.value), key)
            if seen is not key:
                where = f"first on line {seen.start_mark.line + 1}"
                raise _Refused(f"duplicate key {short(key.value)} ({where})", key.start_mark)
        return node


class _Refused(yaml.MarkedYAMLError):
    """A document refused by our budget or rules, with the place it was refused."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)


# The tags the safe loader constructs, plus the merge key ``<<`` (resolved while building).
_SAFE_TAGS = frozenset(t for t in _BoundedLoader.yaml_constructors if t is not None) | {
    "tag:yaml.org,2002:merge"
}


def _check_expansion(root: Node) -> None:
    """Refuse a document whose aliases expand past the budget, loop, or use unsafe tags."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, height), aliases expanded
    open_nodes: set[int] = set()

    def walk(node: Node, depth: int) -> tuple[int, int]:
        if node.tag not in _SAFE_TAGS:
            raise _Refused(f"tag {short(node.tag)} is not allowed", node.start_mark)
        if depth > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels", node.start_mark)
        done = sizes.get(id(node))
        if done is None:
            if id(node) in open_nodes:
                raise _Refused("an alias refers to a section that holds it", node.start_mark)
            open_nodes.add(id(node))
            values, height = 1, 0
            children: list[Node] = []
            if isinstance(node, SequenceNode):
                children = list(node.value)
            elif isinstance(node, MappingNode):
                children = [n for pair in node.value for n in pair]
            for child in children:
                n, h = walk(child, depth + 1)
                values, height = values + n, max(height, h + 1)
                if values > MAX_NODES:
                    raise _Refused(
                        f"more than {MAX_NODES} values once aliases are expanded", node.start_mark
                    )
            open_nodes.discard(id(node))
            done = sizes[id(node)] = (values, height)
        if depth + done[1] > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels", node.start_mark)
        return done

    walk(root, 0)


def _yaml_fault(e: yaml.YAMLError) -> str:
    """One line from a PyYAML error: what, and where (line, column)."""
    if not isinstance(e, yaml.MarkedYAMLError):
        return " ".join(str(e).split())
    mark = e.problem_mark or e.context_mark
    what = ": ".join(str(t) for t in (e.context, e.problem) if t) or "unreadable"
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return " ".join(f"{what}{where}".split())


def safe_yaml(text: str, source: str) -> Any:
    """Parse one YAML document safely.

    PyYAML's safe constructors only (a ``!!python/...`` tag is refused, never run); duplicate
    keys refused, naming the key and its lines; at most :data:`MAX_ALIASES` aliases,
    :data:`MAX_NODES` values with aliases expanded and :data:`MAX_DEPTH` levels of nesting.

    Args:
        text: The YAML text.
        source: The file (or ``--set`` option) named in errors.

    Raises:
        ConfigError: ``"<source>: not valid YAML: <fault> (line L, column C)"``.
    """
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)  # the reader refuses control characters here
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {_yaml_fault(e)}") from None
    except (ValueError, OverflowError) as e:  # e.g. an integer of more than 4300 digits
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_config_text(path: Path) -> str:
    """The text of a config file: a regular file of at most 1 MiB of UTF-8, never binary.

    Raises:
        ConfigError: naming the file and the fault.
    """
    limit = f"a config file is at most {MAX_CONFIG_BYTES} bytes"
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: not a regular file, cannot be a config file")
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {info.st_size} bytes; {limit}")
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)  # the size may have changed since stat
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as e:  # permission denied, name too long, a loop of links
        raise ConfigError(f"{path}: cannot be read ({e.strerror or e})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: more than {MAX_CONFIG_BYTES} bytes; {limit}")
    if b"\x00" in data:
        raise ConfigError(f"{path}: a binary file (NUL bytes), not YAML text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})"
        ) from None
    return text.removeprefix("\ufeff")


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value`` (value as YAML) into a key path and a value."""
    if "=" not in text:
        raise ConfigError(f"--set {short(text)}: expected section.key=value")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise ConfigError(f"--set {short(text)}: empty key")
    return path, safe_yaml(raw, f"--set {key_name(key.strip())}") if raw.strip() else ""


def _apply_override(raw: dict[str, Any], path: Sequence[str], value: Any) -> None:
    node: Any = raw
    for i, part in enumerate(path[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {'.'.join(path)}: no item {part!r}")
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
        if not isinstance(node, dict | list):
            raise ConfigError(f"--set {'.'.join(path)}: {'.'.join(path[: i + 1])} is not a section")
    last = path[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"--set {'.'.join(path)}: no item {last!r}")
        node[int(last)] = value
    else:
        node[last] = value


def config_from_dict(
    raw: Mapping[str, Any], overrides: Sequence[str] = (), source: str = "<dict>"
) -> Config:
    """Build and validate a :class:`Config` from a mapping plus ``--set`` overrides.

    Raises:
        ConfigError: naming ``source`` and the offending key.
    """
    data = copy.deepcopy(dict(raw))
    try:
        for text in overrides:
            path, value = parse_override(text)
            if path[0] == "stages" and len(path) >= 3 and not path[1].isdigit():
                names = [s.get("name") for s in data.get("stages", [])]
                if path[1] not in names:
                    raise ConfigError(f"--set {text}: no stage named {path[1]!r} (stages: {names})")
                path = ["stages", str(names.index(path[1])), *path[2:]]
            _apply_override(data, path, value)
        cfg: Config = _build(Config, data, "")
        cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Load, override and validate a YAML config file.

    Raises:
        ConfigError: if the file is missing, too large, not UTF-8, not safe YAML (duplicate
            keys, aliases past the budget, a ``!!python`` tag), or holds an invalid value.
    """
    p = Path(path)
    raw = safe_yaml(read_config_text(p), str(p)) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return config_from_dict(raw, overrides, source=str(p))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
