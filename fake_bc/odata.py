"""The OData query options BC clients use: ``$filter``, ``$select``, ``$orderby``, ``$top``, ``$skip``,
``$expand``, ``$count``, ``$skiptoken`` and ``Prefer: odata.maxpagesize``.

``$filter`` supports what BC supports: ``eq ne gt ge lt le``, ``and``, ``or`` between conditions on one field,
``contains``/``startswith``/``endswith`` and parentheses. An ``or`` across different fields is refused with a
400, as BC does. String comparisons are case-sensitive. Every problem is a ``BadRequest`` naming it.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

from fake_bc.entities import BOOLEAN, DATE, DATETIME, GUID_T, NUMERIC, STRING, EntityType
from fake_bc.errors import BadRequest

Row = dict[str, Any]
Predicate = Callable[[Row], bool]

SUPPORTED = frozenset({"$filter", "$select", "$orderby", "$top", "$skip", "$expand", "$count", "$skiptoken",
                       "$format", "$schemaversion"})
MAX_DEPTH = 64  # nesting of parentheses in $filter: deeper is refused, not a RecursionError

_TOKEN = re.compile(r"""\s*(?:
    (?P<str>'(?:[^']|'')*')
  | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![\w-]))
  | (?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?(?:Z|[+-]\d{2}:\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2}(?![\w-]))
  | (?P<num>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[mMdDfFlL]?(?![\w.]))
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[(),])
)""", re.X)
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le,
}
_KIND = {"eq": "Equal", "ne": "NotEqual", "gt": "GreaterThan", "ge": "GreaterThanOrEqual", "lt": "LessThan",
         "le": "LessThanOrEqual"}
_FUNCTIONS: dict[str, Callable[[str, str], bool]] = {
    "contains": lambda v, x: x in v, "startswith": str.startswith, "endswith": str.endswith,
}


@dataclass(frozen=True)
class Token:
    kind: str  # str guid dt date num name punct end
    text: str
    pos: int


def tokenize(text: str) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            if text[pos:].isspace():
                break
            raise BadRequest(f"Syntax error at position {pos} in '{text[:200]}'.")
        kind = match.lastgroup or "end"
        tokens.append(Token(kind, match[kind], match.start(kind)))
        pos = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


@dataclass(frozen=True)
class Literal:
    kind: str  # str guid dt date num bool null
    value: Any
    text: str


def _literal(token: Token) -> Literal | None:
    if token.kind == "str":
        return Literal("str", token.text[1:-1].replace("''", "'"), token.text)
    if token.kind == "num":
        text = token.text.rstrip("mMdDfFlL")
        return Literal("num", float(text) if any(c in text for c in ".eE") else int(text), token.text)
    if token.kind in ("guid", "date", "dt"):
        return Literal(token.kind, token.text.lower() if token.kind == "guid" else token.text, token.text)
    if token.kind == "name" and token.text in ("true", "false"):
        return Literal("bool", token.text == "true", token.text)
    if token.kind == "name" and token.text == "null":
        return Literal("null", None, token.text)
    return None


_LITERAL_TYPE = {"str": STRING, "num": "Edm.Decimal", "guid": GUID_T, "date": DATE, "dt": DATETIME,
                 "bool": BOOLEAN}


def _to_datetime(text: str) -> datetime:
    value = datetime.fromisoformat(text if "T" in text else f"{text}T00:00:00+00:00")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class _Parser:
    """Recursive descent over the tokens; yields (predicate, fields referenced)."""

    def __init__(self, text: str, entity: EntityType):
        self.text, self.entity = text, entity
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        token = self.tokens[self.i]
        if token.kind != "end":
            self.i += 1
        return token

    def fail(self, what: str, token: Token | None = None) -> BadRequest:
        token = token or self.peek()
        found = f"'{token.text[:60]}'" if token.kind != "end" else "the end of the expression"
        return BadRequest(f"Invalid filter expression: {what} expected at position {token.pos} but found {found} "
                          f"in '{self.text[:200]}'.")

    def expect(self, text: str) -> None:
        token = self.take()
        if token.text != text:
            raise self.fail(f"'{text}'", token)

    def parse(self) -> Predicate:
        predicate, _ = self.or_expr()
        if self.peek().kind != "end":
            raise self.fail("'and', 'or' or ')'")
        return predicate

    def or_expr(self) -> tuple[Predicate, frozenset[str]]:
        first, fields = self.and_expr()
        parts = [first]
        while self.peek().kind == "name" and self.peek().text == "or":
            self.take()
            nxt, more = self.and_expr()
            parts.append(nxt)
            fields |= more
        if len(parts) > 1 and len(fields) > 1:
            names = "', '".join(sorted(fields))
            raise BadRequest(f"Invalid filter expression: the 'or' operator is only supported between conditions "
                             f"on the same field; '{self.text[:200]}' combines different fields ('{names}').")
        if len(parts) == 1:
            return first, fields
        return (lambda row: any(p(row) for p in parts)), fields

    def and_expr(self) -> tuple[Predicate, frozenset[str]]:
        first, fields = self.primary()
        parts = [first]
        while self.peek().kind == "name" and self.peek().text == "and":
            self.take()
            nxt, more = self.primary()
            parts.append(nxt)
            fields |= more
        if len(parts) == 1:
            return first, fields
        return (lambda row: all(p(row) for p in parts)), fields

    def primary(self) -> tuple[Predicate, frozenset[str]]:
        token = self.peek()
        if token.text == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise BadRequest(f"Invalid filter expression: parentheses nested deeper than {MAX_DEPTH}.")
            self.take()
            inner = self.or_expr()
            self.expect(")")
            self.depth -= 1
            return inner
        if token.kind != "name" or _literal(token) is not None:
            raise self.fail("a property name or a function")
        self.take()
        if self.peek().text == "(":
            return self.function(token)
        return self.comparison(token)

    def function(self, name: Token) -> tuple[Predicate, frozenset[str]]:
        test = _FUNCTIONS.get(name.text)
        if test is None:
            raise BadRequest(f"Invalid filter expression: the function '{name.text[:60]}' is not supported; use "
                             "contains, startswith or endswith.")
        self.expect("(")
        field_token = self.take()
        if field_token.kind != "name":
            raise self.fail("a property name", field_token)
        prop = self.entity.prop(field_token.text)
        self.expect(",")
        arg = _literal(self.take())
        self.expect(")")
        if prop.type != STRING or arg is None or arg.kind != "str":
            raise BadRequest(f"Invalid filter expression: {name.text}() needs a string property and a string "
                             f"literal; got '{prop.name}' ({prop.type}) and {arg.text[:60] if arg else 'nothing'}.")
        field, needle = prop.name, arg.value

        def predicate(row: Row) -> bool:
            value = row.get(field)
            return isinstance(value, str) and test(value, needle)

        return predicate, frozenset({field})

    def comparison(self, name: Token) -> tuple[Predicate, frozenset[str]]:
        prop = self.entity.prop(name.text)
        op_token = self.take()
        compare = _COMPARE.get(op_token.text) if op_token.kind == "name" else None
        if compare is None:
            raise self.fail("a comparison operator (eq, ne, gt, ge, lt, le)", op_token)
        value_token = self.take()
        literal = _literal(value_token)
        if literal is None:
            raise self.fail("a literal value", value_token)
        return _comparison(prop.name, prop.type, op_token.text, compare, literal, self.entity), frozenset({prop.name})


def _comparison(field: str, edm: str, op: str, compare: Callable[[Any, Any], bool], literal: Literal,
                entity: EntityType) -> Predicate:
    if literal.kind == "null":
        if op not in ("eq", "ne"):
            raise BadRequest(f"Invalid filter expression: null can only be compared with eq or ne ('{field}').")
        return (lambda row: row.get(field) is None) if op == "eq" else (lambda row: row.get(field) is not None)
    ok = (literal.kind == "str" and edm == STRING) or (literal.kind == "num" and edm in NUMERIC) or (
        literal.kind == "bool" and edm == BOOLEAN) or (literal.kind == "guid" and edm == GUID_T) or (
        literal.kind in ("date", "dt") and edm in (DATE, DATETIME))
    if not ok:
        raise BadRequest(f"A binary operator with incompatible types was detected. Found operand types '{edm}' and "
                         f"'{_LITERAL_TYPE.get(literal.kind, 'Edm.String')}' for operator kind '{_KIND[op]}' "
                         f"(property '{field}' on type '{entity.qualified}').")
    if edm == BOOLEAN and op not in ("eq", "ne"):
        raise BadRequest(f"Invalid filter expression: '{op}' cannot be applied to the Boolean property '{field}'.")
    if edm in (DATE, DATETIME):
        try:
            target = _to_datetime(literal.value)
        except ValueError:
            raise BadRequest(f"Invalid filter expression: '{literal.text[:60]}' is not a valid date.") from None

        def on_time(row: Row) -> bool:
            value = row.get(field)
            if not isinstance(value, str):
                return False
            try:
                return compare(_to_datetime(value), target)
            except (ValueError, TypeError):
                return False

        return on_time
    target_value = literal.value
    kind: type | tuple[type, ...] = (int, float) if literal.kind == "num" else type(target_value)
    wants_bool = literal.kind == "bool"

    def on_value(row: Row) -> bool:
        value = row.get(field)
        if isinstance(value, bool) is not wants_bool or not isinstance(value, kind):
            return False  # custom API rows may hold other types: they simply do not match
        if edm == GUID_T:
            value = value.lower()
        return compare(value, target_value)

    return on_value


def parse_filter(text: str, entity: EntityType) -> Predicate:
    return _Parser(text, entity).parse()


@dataclass(frozen=True)
class Query:
    """The parsed query options of one request."""

    filter: Predicate | None = None
    select: tuple[str, ...] | None = None
    orderby: tuple[tuple[str, bool], ...] = ()  # (property, descending)
    top: int | None = None
    skip: int = 0
    expand: tuple[str, ...] = ()
    count: bool = False
    skiptoken: str | None = None
    params: tuple[tuple[str, str], ...] = ()  # every parameter, in order (for nextLink)


def _non_negative(name: str, raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise BadRequest(f"Invalid value '{raw[:40]}' for {name} query option found. The {name} query option "
                         "requires a non-negative integer value.")
    return int(raw)


@lru_cache(maxsize=4096)
def parse_query(raw: str, entity: EntityType) -> Query:
    """Parse a query string against an entity type (cached: clients repeat the same queries)."""
    pairs = tuple(parse_qsl(raw, keep_blank_values=True, errors="replace"))
    params: dict[str, str] = {}
    for key, value in pairs:
        if key.startswith("$") and key in params:
            raise BadRequest(f"Query option '{key[:40]}' was specified more than once, but it must be specified at "
                             "most once.")
        params.setdefault(key, value)
    for key in params:
        if key.startswith("$") and key not in SUPPORTED:
            raise BadRequest(f"The query parameter '{key[:40]}' is not supported.")
    predicate = parse_filter(params["$filter"], entity) if params.get("$filter", "").strip() else None
    select = None
    if "$select" in params:
        names = [n.strip() for n in params["$select"].split(",") if n.strip()]
        select = None if "*" in names else tuple(entity.prop(n).name for n in dict.fromkeys(names))
    orderby: list[tuple[str, bool]] = []
    for part in (p.strip() for p in params.get("$orderby", "").split(",")):
        if not part:
            continue
        words = part.split()
        if len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise BadRequest(f"Invalid $orderby clause '{part[:100]}': expected 'property [asc|desc]'.")
        orderby.append((entity.prop(words[0]).name, len(words) == 2 and words[1].lower() == "desc"))
    expand: list[str] = []
    for part in (p.strip() for p in params.get("$expand", "").split(",")):
        if not part:
            continue
        if entity.child_set(part) is None:
            raise BadRequest(f"Could not find a navigation property named '{part[:100]}' on type "
                             f"'{entity.qualified}'.")
        expand.append(part)
    count = params.get("$count", "false").lower()
    if count not in ("true", "false"):
        raise BadRequest(f"Invalid value '{count[:40]}' for $count query option found. Valid values are "
                         "'true' and 'false'.")
    return Query(
        filter=predicate, select=select, orderby=tuple(orderby),
        top=_non_negative("$top", params["$top"]) if "$top" in params else None,
        skip=_non_negative("$skip", params["$skip"]) if "$skip" in params else 0,
        expand=tuple(dict.fromkeys(expand)), count=count == "true", skiptoken=params.get("$skiptoken"),
        params=pairs,
    )


def max_page_size(prefer: str) -> int | None:
    """The ``odata.maxpagesize`` preference, if well-formed (a preference a server may ignore otherwise)."""
    for part in prefer.split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() in ("odata.maxpagesize", "maxpagesize"):
            value = value.strip().strip('"')
            if value.isascii() and value.isdigit() and 0 < len(value) <= 12 and int(value) > 0:
                return int(value)
    return None


def order(rows: list[Row], orderby: tuple[tuple[str, bool], ...], sort_value: Callable[[Any], Any]) -> list[Row]:
    """Stable sorts from the last key to the first; ties keep the default order the rows arrive in."""
    for field, descending in reversed(orderby):
        rows = sorted(rows, key=lambda r, f=field: sort_value(r.get(f)), reverse=descending)
    return rows


def project(row: Row, select: tuple[str, ...] | None) -> Row:
    if select is None:
        return row
    out = {"@odata.etag": row["@odata.etag"]}
    for name in select:
        out[name] = row.get(name)
    return out
