"""The OData query options SensorThings uses: ``$filter``, ``$orderby``, ``$select``, ``$expand``.

Text is parsed into small syntax trees here; :mod:`api.sta.compile` turns a tree into a
parameterised SQL composition for one entity set. Nothing here builds SQL, and every malformed
option raises :class:`QueryError` with a message naming the problem.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

# Longest option text and deepest nesting accepted: a filter is a few conditions, not a program.
MAX_OPTION_CHARS = 4_000
MAX_DEPTH = 32
# Operators in one expression, and $expand items in one request, at most.
MAX_OPERATORS = 100
MAX_EXPANSIONS = 20


class QueryError(ValueError):
    """A query option the server cannot accept (answered 400)."""


# ---------------------------------------------------------------------------------------------
# $filter syntax tree


@dataclass(frozen=True, slots=True)
class Lit:
    """A literal: string, number, date-time, boolean or null."""

    value: str | float | datetime | bool | None


@dataclass(frozen=True, slots=True)
class Prop:
    """A property path such as ``result`` or ``properties/family``."""

    path: str


@dataclass(frozen=True, slots=True)
class Call:
    """A function call such as ``startswith(name, 'Pos')``."""

    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Binary:
    """``left OP right`` for comparison, logical and arithmetic operators."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node


Node = Lit | Prop | Call | Binary | Not

COMPARISONS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})
ARITHMETIC = frozenset({"add", "sub", "mul", "div", "mod"})
_KEYWORDS = COMPARISONS | ARITHMETIC | {"and", "or", "not"}

_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2})?"
)
_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_@][A-Za-z0-9_@.]*(?:/[A-Za-z_@][A-Za-z0-9_@.]*)*")
_SPACE = re.compile(r"\s+")

TokenKind = Literal["(", ")", ",", "str", "num", "time", "name"]


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    text: str
    at: int


def tokenize(text: str) -> list[Token]:
    """The tokens of a ``$filter`` (or ``$orderby``) expression."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        space = _SPACE.match(text, i)
        if space:
            i = space.end()
            continue
        c = text[i]
        if c in "(),":
            tokens.append(Token(c, c, i))  # type: ignore[arg-type]
            i += 1
            continue
        if c == "'":
            j, parts = i + 1, []
            while True:
                k = text.find("'", j)
                if k < 0:
                    raise QueryError(f"unterminated string starting at character {i + 1}")
                parts.append(text[j:k])
                if text.startswith("''", k):  # OData doubles a quote inside a string
                    parts.append("'")
                    j = k + 2
                    continue
                i = k + 1
                break
            tokens.append(Token("str", "".join(parts), i))
            continue
        match = _DATETIME.match(text, i)
        if match:
            tokens.append(Token("time", match.group(), i))
            i = match.end()
            continue
        match = _NUMBER.match(text, i)
        if match and (
            c != "-"
            or not tokens
            or tokens[-1].kind in {"(", ","}
            or tokens[-1].text.lower() in _KEYWORDS
        ):
            tokens.append(Token("num", match.group(), i))
            i = match.end()
            continue
        match = _NAME.match(text, i)
        if match:
            tokens.append(Token("name", match.group(), i))
            i = match.end()
            continue
        raise QueryError(f"unexpected character {c!r} at position {i + 1}")
    return tokens


class _Parser:
    """Recursive descent over OData's precedence: or < and < not < comparison < add < mul."""

    def __init__(self, text: str) -> None:
        if len(text) > MAX_OPTION_CHARS:
            raise QueryError(f"the expression is longer than {MAX_OPTION_CHARS} characters")
        self.tokens = tokenize(text)
        self.pos = 0
        self.depth = 0
        self.operators = 0

    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def keyword(self, *words: str) -> str | None:
        token = self.peek()
        if token is not None and token.kind == "name" and token.text.lower() in words:
            self.pos += 1
            self.operators += 1
            if self.operators > MAX_OPERATORS:
                raise QueryError(f"the expression has more than {MAX_OPERATORS} operators")
            return token.text.lower()
        return None

    def expect(self, kind: str) -> Token:
        token = self.peek()
        if token is None:
            raise QueryError(f"expected {kind!r} but the expression ended")
        if token.kind != kind:
            raise QueryError(f"expected {kind!r} at position {token.at + 1}, found {token.text!r}")
        self.pos += 1
        return token

    def parse(self) -> Node:
        if not self.tokens:
            raise QueryError("the expression is empty")
        node = self.or_()
        token = self.peek()
        if token is not None:
            raise QueryError(f"unexpected {token.text!r} at position {token.at + 1}")
        return node

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise QueryError(f"the expression nests deeper than {MAX_DEPTH} levels")

    def or_(self) -> Node:
        node = self.and_()
        while self.keyword("or"):
            node = Binary("or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.keyword("and"):
            node = Binary("and", node, self.not_())
        return node

    def not_(self) -> Node:
        if self.keyword("not"):
            self.nested()
            node: Node = Not(self.not_())
            self.depth -= 1
            return node
        return self.comparison()

    def comparison(self) -> Node:
        node = self.additive()
        op = self.keyword(*COMPARISONS)
        if op:
            node = Binary(op, node, self.additive())
        return node

    def additive(self) -> Node:
        node = self.multiplicative()
        while op := self.keyword("add", "sub"):
            node = Binary(op, node, self.multiplicative())
        return node

    def multiplicative(self) -> Node:
        node = self.primary()
        while op := self.keyword("mul", "div", "mod"):
            node = Binary(op, node, self.primary())
        return node

    def primary(self) -> Node:
        token = self.peek()
        if token is None:
            raise QueryError("the expression ended where a value was expected")
        self.pos += 1
        if token.kind == "(":
            self.nested()
            node = self.or_()
            self.expect(")")
            self.depth -= 1
            return node
        if token.kind == "str":
            return Lit(token.text)
        if token.kind == "num":
            return Lit(_number(token.text))
        if token.kind == "time":
            return Lit(parse_datetime(token.text))
        if token.kind == "name":
            word = token.text.lower()
            if word in {"true", "false"}:
                return Lit(word == "true")
            if word == "null":
                return Lit(None)
            if word in _KEYWORDS:
                raise QueryError(
                    f"operator {token.text!r} at position {token.at + 1} lacks an operand"
                )
            following = self.peek()
            if following is not None and following.kind == "(":
                return self.call(token)
            return Prop(token.text)
        raise QueryError(f"unexpected {token.text!r} at position {token.at + 1}")

    def call(self, name: Token) -> Node:
        self.expect("(")
        self.nested()
        args: list[Node] = []
        token = self.peek()
        if token is not None and token.kind == ")":
            self.pos += 1
        else:
            args.append(self.or_())
            while self.peek() is not None and self.peek().kind == ",":  # type: ignore[union-attr]
                self.pos += 1
                args.append(self.or_())
            self.expect(")")
        self.depth -= 1
        return Call(name.text.lower(), tuple(args))


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise QueryError(f"number {text[:40]!r} is out of range")
    return value


def parse_datetime(text: str) -> datetime:
    """An RFC 3339 date-time with an offset (``Z`` or ``+07:00``); naive times are refused."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(f"{text[:40]!r} is not a valid date-time") from None
    if moment.tzinfo is None:
        raise QueryError(f"date-time {text!r} needs a UTC offset, such as Z or +07:00")
    return moment


def parse_filter(text: str) -> Node:
    """The syntax tree of a ``$filter`` expression."""
    return _Parser(text).parse()


# ---------------------------------------------------------------------------------------------
# $orderby, $select, $expand


@dataclass(frozen=True, slots=True)
class Order:
    path: str
    descending: bool


def parse_orderby(text: str) -> list[Order]:
    """``prop [asc|desc], ...``."""
    if len(text) > MAX_OPTION_CHARS:
        raise QueryError(f"$orderby is longer than {MAX_OPTION_CHARS} characters")
    orders: list[Order] = []
    for item in text.split(","):
        words = item.split()
        if not words or len(words) > 2 or not _NAME.fullmatch(words[0]):
            raise QueryError(f"$orderby item {item.strip()[:60]!r} is not 'property [asc|desc]'")
        direction = words[1].lower() if len(words) == 2 else "asc"
        if direction not in {"asc", "desc"}:
            raise QueryError(f"$orderby direction {words[1][:20]!r} is neither asc nor desc")
        orders.append(Order(words[0], direction == "desc"))
    return orders


def parse_select(text: str) -> list[str]:
    """``name, name, ...``."""
    names = [part.strip() for part in text.split(",")]
    for name in names:
        if not _NAME.fullmatch(name):
            raise QueryError(f"$select item {name[:60]!r} is not a property name")
    return names


@dataclass(slots=True)
class Options:
    """The query options of one request, or of one ``$expand`` item."""

    top: int | None = None
    skip: int = 0
    count: bool = False
    filter: Node | None = None
    orderby: list[Order] = field(default_factory=list)
    select: list[str] | None = None
    expand: list[Expand] = field(default_factory=list)
    skiptoken: str | None = None
    # The options as given, to carry over into @iot.nextLink.
    raw: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Expand:
    """One ``$expand`` item: a navigation property and its own options."""

    name: str
    options: Options


def split_top_level(text: str, separators: str) -> list[str]:
    """Split on separators outside parentheses and quoted strings."""
    parts: list[str] = []
    depth, start, quoted = 0, 0, False
    for i, c in enumerate(text):
        if c == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise QueryError(f"unbalanced ')' at position {i + 1}")
        elif c in separators and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if quoted:
        raise QueryError("unterminated string")
    if depth:
        raise QueryError("unbalanced '(': a parenthesis is not closed")
    parts.append(text[start:])
    return parts


def parse_expand(text: str, depth: int = 0) -> list[Expand]:
    """``Nav``, ``Nav/Nav`` or ``Nav($top=5;$filter=...;$expand=...)``, comma-separated."""
    if len(text) > MAX_OPTION_CHARS:
        raise QueryError(f"$expand is longer than {MAX_OPTION_CHARS} characters")
    if depth > 4:
        raise QueryError("$expand nests deeper than 4 levels")
    items: list[Expand] = []
    for item in split_top_level(text, ","):
        part = item.strip()
        name, _, rest = part.partition("(")
        name = name.strip()
        if not _NAME.fullmatch(name):
            raise QueryError(f"$expand item {part[:60]!r} does not start with a navigation name")
        options = Options()
        if rest:
            if not rest.rstrip().endswith(")"):
                raise QueryError(f"$expand item {part[:60]!r} has text after its options")
            inner = rest.rstrip()[:-1]
            nested: dict[str, str] = {}
            for option in split_top_level(inner, ";"):
                key, sep, value = option.partition("=")
                if not sep:
                    raise QueryError(f"$expand option {option[:60]!r} is not '$name=value'")
                nested[key.strip()] = value.strip()
            options = parse_options(nested, depth=depth + 1)
        # Nav1/Nav2(options) is shorthand for Nav1($expand=Nav2(options)).
        segments = name.split("/")
        if depth + len(segments) > 5:
            raise QueryError("$expand nests deeper than 4 levels")
        for position in range(len(segments) - 1, 0, -1):
            remainder = part[len("/".join(segments[:position])) + 1 :]
            options = Options(
                expand=[Expand(segments[position], options)], raw={"$expand": remainder}
            )
        items.append(Expand(segments[0], options))
    return items


_INT_OPTIONS = {"$top", "$skip"}
KNOWN_OPTIONS = {
    "$top",
    "$skip",
    "$count",
    "$filter",
    "$orderby",
    "$select",
    "$expand",
    "$skiptoken",
    "$resultFormat",
}


def parse_options(raw: dict[str, str], *, depth: int = 0) -> Options:
    """Parse a set of options (of the request, or of one ``$expand`` item)."""
    options = Options(raw=dict(raw))
    for key, value in raw.items():
        if key not in KNOWN_OPTIONS:
            raise QueryError(f"unknown query option {key[:40]!r}")
        if key in _INT_OPTIONS:
            if not value.isdigit() or len(value) > 12:
                raise QueryError(f"{key} must be a whole number from 0, not {value[:40]!r}")
            if key == "$top":
                options.top = int(value)
            else:
                options.skip = int(value)
        elif key == "$count":
            if value not in {"true", "false"}:
                raise QueryError(f"$count must be true or false, not {value[:40]!r}")
            options.count = value == "true"
        elif key == "$filter":
            options.filter = parse_filter(value)
        elif key == "$orderby":
            options.orderby = parse_orderby(value)
        elif key == "$select":
            options.select = parse_select(value)
        elif key == "$expand":
            options.expand = parse_expand(value, depth)
            if depth == 0 and _expansions(options.expand) > MAX_EXPANSIONS:
                raise QueryError(f"$expand names more than {MAX_EXPANSIONS} navigation properties")
        elif key == "$skiptoken":
            options.skiptoken = value
        elif key == "$resultFormat":
            raise QueryError("$resultFormat is not supported; results come as JSON entities")
    return options


def _expansions(items: list[Expand]) -> int:
    return sum(1 + _expansions(item.options.expand) for item in items)
