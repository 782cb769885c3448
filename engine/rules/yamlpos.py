"""YAML to Python with the line and column of every value kept, so errors can point into the file.

Floats become ``Decimal`` built from the text as written (``0.1`` is exactly one tenth), dates stay
ISO strings (the schema checks their shape), and duplicate keys are an error rather than a silent
overwrite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a file: where (a path into the document, and line/column) and what."""

    file: str
    line: int
    column: int
    where: str
    message: str

    def __str__(self) -> str:
        where = f" {self.where}:" if self.where else ""
        return f"{self.file}:{self.line}:{self.column}:{where} {self.message}"


@dataclass
class Document:
    """A parsed YAML document plus the position of each node, by path."""

    file: str
    data: Any
    positions: dict[Path, tuple[int, int]] = field(default_factory=dict)
    key_positions: dict[Path, tuple[int, int]] = field(default_factory=dict)
    nodes: int = 0  # values converted so far

    def position(self, path: Path, key: bool = False) -> tuple[int, int]:
        """Line and column (1-based) of the deepest node on ``path`` that exists (of its key if ``key``)."""
        path = tuple(path)
        if key and path in self.key_positions:
            return self.key_positions[path]
        while path not in self.positions and path:
            path = path[:-1]
        return self.positions.get(path, (1, 1))

    def problem(self, path: Path, message: str, where: str | None = None, key: bool = False) -> Problem:
        line, col = self.position(path, key)
        return Problem(self.file, line, col, where if where is not None else describe_path(path), message)


def describe_path(path: Path) -> str:
    return "/".join(str(p) for p in path)


class YamlError(Exception):
    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


_constructor = yaml.constructor.SafeConstructor()
_FLOAT = "tag:yaml.org,2002:float"
_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"


MAX_DEPTH = 64  # nested mappings and lists; PyYAML composes recursively, so a hostile file must stop sooner
MAX_NODES = 200_000  # values after aliases are expanded (a few aliases of aliases can stand for billions)


def _check_depth(text: str, file: str) -> None:
    """Refuse a document nested more than ``MAX_DEPTH`` levels, at the node that goes too deep. The event
    parser keeps its own stack (it does not recurse), so this pass is safe where composing is not."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise YamlError(Problem(file, mark.line + 1, mark.column + 1, "",
                                        f"mappings and lists nest more than {MAX_DEPTH} levels deep"))
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def parse(text: str, file: str) -> Document:
    """Parse one YAML document; a syntax error becomes a :class:`YamlError` with its position."""
    try:
        _check_depth(text, file)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = exc.problem or exc.context or "invalid YAML"
        raise YamlError(Problem(file, line, col, "", f"YAML syntax: {reason}")) from None
    except yaml.YAMLError as exc:
        raise YamlError(Problem(file, 1, 1, "", f"YAML syntax: {exc}")) from None
    doc = Document(file, None)
    if root is None:
        return doc
    doc.data = _convert(root, (), doc)
    return doc


def _convert(node: yaml.Node, path: Path, doc: Document) -> Any:
    doc.nodes += 1
    if doc.nodes > MAX_NODES or len(path) > MAX_DEPTH:  # aliases expanded: too many values, or an alias of itself
        raise YamlError(doc.problem(path, f"aliases expand to more than {MAX_NODES} values or {MAX_DEPTH} levels"))
    doc.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlError(doc.problem(path, "mapping keys must be plain text"))
            key = _scalar(key_node, path, doc)
            key = str(key) if not isinstance(key, str) else key
            if key in result:
                line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                raise YamlError(Problem(doc.file, line, col, describe_path((*path, key)),
                                        f"duplicate key {key!r}"))
            child_path = (*path, key)
            key_at = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            doc.key_positions[child_path] = key_at
            # A scalar value is pointed at where it is written; a mapping or list at its key.
            if isinstance(value_node, yaml.ScalarNode):
                doc.positions[child_path] = (value_node.start_mark.line + 1, value_node.start_mark.column + 1)
            else:
                doc.positions[child_path] = key_at
            result[key] = _convert(value_node, child_path, doc)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), doc) for i, item in enumerate(node.value)]
    return _scalar(node, path, doc)


def _scalar(node: yaml.ScalarNode, path: Path, doc: Document) -> Any:
    tag = node.tag
    if tag == _FLOAT:
        try:
            value = Decimal(node.value.replace("_", ""))
        except InvalidOperation:
            value = None
        if value is None or not value.is_finite():
            raise YamlError(doc.problem(path, f"{node.value!r} is not a finite number"))
        return value
    if tag == _INT:
        return _constructor.construct_yaml_int(node)
    if tag == _BOOL:
        return _constructor.construct_yaml_bool(node)
    if tag == _NULL:
        return None
    return node.value  # strings, and timestamps kept as written
