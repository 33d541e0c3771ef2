"""Fraud rules: a YAML file of named rules and block / allow lists, evaluated with the model.

A rules file (`config/fraud_rules.yaml` is a worked example)::

    version: 1
    rules:
      - name: device_burst          # letters, digits, _ and -; unique in the file
        kind: velocity
        entity: device              # customer | device | ip
        window: 1h                  # customer: 1h; device, ip: 1h | 24h | 7d
        max_claims: 5               # hits when <entity>_claims_<window> > max_claims
        action: review              # review | block
      - name: shared_device
        kind: shared
        entity: device              # device | ip
        window: 30d                 # optional; 30d is the only window
        max_customers: 3            # hits when <entity>_customers_30d > max_customers
        action: review
      - name: big_cashback
        kind: amount
        field: cashback_amount      # amount | cashback_amount | amount_vs_avg_basket
                                    # | cashback_share
        op: ">"                     # > >= < <=  (quote it: a bare > starts a YAML block)
        value: 25
        action: review
      - name: young_account_big_claim
        kind: new_account
        entity: customer            # optional: customer (tenure_days, the default), device
                                    # or ip (<entity>_youngest_account_days)
        max_tenure_days: 7          # hits when the age in days <= max_tenure_days ...
        min_amount: 150             # ... and amount >= min_amount (optional, default 0)
        action: review
      - name: receipt_reused
        kind: receipt_reuse         # hits when receipt_seen_before is true
        action: block
    lists:                          # optional
      block: {customer_id: [...], device_id: [...], ip_hash: [...], receipt_hash: [...]}
      allow: {customer_id: [...], device_id: [...], ip_hash: [...]}

Every rule also takes `description` (text) and `enabled` (default true; a disabled rule is
neither evaluated nor reported). Lists hold the raw column values: `ip_hash` entries are the
keyed hashes stored in the tables, never raw IPs.

What the features mean at a claim's time t (features/fresh.py, features/network.py):
`<entity>_claims_1h` counts the claims in [t - 1h, t] including this one; the 24h and 7d
counts and `<entity>_customers_30d` are as of the last daily close (00:00 UTC), so they do
not include the claim itself nor the claims of its day.

Evaluation: every rule compares features of the claim; a rule whose feature is null or NaN
(an unknown device, a customer's first claim) never fires. `rule_hits` lists the rules a claim
hit, in file order, then the lists it matched (`block_list.<column>`, `allow_list.<column>`).
`rule_action` is, by precedence:

1. `block`: on a block list, or any `block` rule hit (the allow list does not override these);
2. `allowlisted`: on an allow list: it overrides `review` rules, and
   `models.fraud.decisions` then allows the claim whatever the model says;
3. `review`: any `review` rule hit;
4. `allow`: nothing fired.

The file is checked when it is loaded: an unknown field, kind, entity, window, operator or
action, a wrong type, or a duplicate rule name is reported with the file, the line and the
field, e.g. `config/x.yaml:7: rules[1].window: unknown window '2h' (known: 1h, 24h, 7d)`.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails

from cashback.errors import CashbackError

ALLOW = "allow"
ALLOWLISTED = "allowlisted"
REVIEW = "review"
BLOCK = "block"
ACTIONS = (ALLOW, ALLOWLISTED, REVIEW, BLOCK)
FLAGGING = (REVIEW, BLOCK)
ENTITY_PREFIX = {"customer": "customer", "device": "device", "ip": "ip"}
VELOCITY_WINDOWS: dict[str, tuple[str, ...]] = {
    "customer": ("1h",),
    "device": ("1h", "24h", "7d"),
    "ip": ("1h", "24h", "7d"),
}
ACCOUNT_AGE = {
    "customer": "tenure_days",
    "device": "device_youngest_account_days",
    "ip": "ip_youngest_account_days",
}
OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
IS_TRUE = "is true"
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]*$"

FrameT = TypeVar("FrameT", pl.DataFrame, pl.LazyFrame)


class RulesError(CashbackError):
    """A rules file that cannot be used, or a frame the rules cannot read."""


@dataclass(frozen=True)
class Condition:
    """One comparison of a feature with a value (`IS_TRUE`: the feature is true).

    Attributes:
        feature: the column read.
        op: one of `OPERATORS`, or `IS_TRUE`.
        value: the right-hand side (unused for `IS_TRUE`).
    """

    feature: str
    op: str
    value: float = 0.0


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Rule(_Spec):
    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=80)]
    action: Literal["review", "block"]
    description: str = ""
    enabled: bool = True

    def conditions(self) -> tuple[Condition, ...]:
        """What must all hold for the rule to fire."""
        raise NotImplementedError


class VelocityRule(_Rule):
    """Too many claims by a customer, device or IP in a window."""

    kind: Literal["velocity"]
    entity: Literal["customer", "device", "ip"]
    window: str
    max_claims: Annotated[int, Field(ge=0)]

    @field_validator("window")
    @classmethod
    def _known_window(cls, window: str, info: ValidationInfo) -> str:
        entity = info.data.get("entity")
        if entity in VELOCITY_WINDOWS:
            known = VELOCITY_WINDOWS[entity]
            if window not in known:
                msg = f"unknown window {window!r} for entity {entity} (known: {', '.join(known)})"
                raise ValueError(msg)
        elif window not in VELOCITY_WINDOWS["device"]:
            known = VELOCITY_WINDOWS["device"]
            msg = f"unknown window {window!r} (known: {', '.join(known)})"
            raise ValueError(msg)
        return window

    def conditions(self) -> tuple[Condition, ...]:
        """`<entity>_claims_<window>` > max_claims."""
        feature = f"{ENTITY_PREFIX[self.entity]}_claims_{self.window}"
        return (Condition(feature, ">", self.max_claims),)


class SharedRule(_Rule):
    """Too many distinct accounts on a device or IP over the 30 days before the close."""

    kind: Literal["shared"]
    entity: Literal["device", "ip"]
    window: Literal["30d"] = "30d"
    max_customers: Annotated[int, Field(ge=1)]

    def conditions(self) -> tuple[Condition, ...]:
        """`<entity>_customers_30d` > max_customers."""
        feature = f"{ENTITY_PREFIX[self.entity]}_customers_{self.window}"
        return (Condition(feature, ">", self.max_customers),)


class AmountRule(_Rule):
    """A claim amount, its cashback, or their ratios compared with a value."""

    kind: Literal["amount"]
    field: Literal["amount", "cashback_amount", "amount_vs_avg_basket", "cashback_share"]
    op: Literal[">", ">=", "<", "<="]
    value: float

    def conditions(self) -> tuple[Condition, ...]:
        """`field op value`."""
        return (Condition(self.field, self.op, self.value),)


class NewAccountRule(_Rule):
    """A young account (or the youngest account on a device / IP) claiming a large amount."""

    kind: Literal["new_account"]
    entity: Literal["customer", "device", "ip"] = "customer"
    max_tenure_days: Annotated[float, Field(ge=0)]
    min_amount: Annotated[float, Field(ge=0)] = 0.0

    def conditions(self) -> tuple[Condition, ...]:
        """Age in days <= max_tenure_days, and amount >= min_amount when it is positive."""
        age = Condition(ACCOUNT_AGE[self.entity], "<=", self.max_tenure_days)
        if self.min_amount > 0:
            return (age, Condition("amount", ">=", self.min_amount))
        return (age,)


class ReceiptReuseRule(_Rule):
    """A receipt already used for an earlier claim."""

    kind: Literal["receipt_reuse"]

    def conditions(self) -> tuple[Condition, ...]:
        """`receipt_seen_before` is true."""
        return (Condition("receipt_seen_before", IS_TRUE),)


Rule = Annotated[
    VelocityRule | SharedRule | AmountRule | NewAccountRule | ReceiptReuseRule,
    Field(discriminator="kind"),
]
KINDS: dict[str, type[_Rule]] = {
    "velocity": VelocityRule,
    "shared": SharedRule,
    "amount": AmountRule,
    "new_account": NewAccountRule,
    "receipt_reuse": ReceiptReuseRule,
}


class BlockLists(_Spec):
    """Values whose claims are always blocked."""

    customer_id: list[Annotated[str, Field(min_length=1)]] = []
    device_id: list[Annotated[str, Field(min_length=1)]] = []
    ip_hash: list[Annotated[str, Field(min_length=1)]] = []
    receipt_hash: list[Annotated[str, Field(min_length=1)]] = []


class AllowLists(_Spec):
    """Values whose claims skip review rules (block lists and block rules still apply)."""

    customer_id: list[Annotated[str, Field(min_length=1)]] = []
    device_id: list[Annotated[str, Field(min_length=1)]] = []
    ip_hash: list[Annotated[str, Field(min_length=1)]] = []


class Lists(_Spec):
    """The block and allow lists."""

    block: BlockLists = BlockLists()
    allow: AllowLists = AllowLists()


class RulesFile(_Spec):
    """A whole rules file."""

    version: Literal[1]
    rules: list[Rule] = []
    lists: Lists = Lists()


@dataclass(frozen=True)
class RuleResult:
    """The rules' verdict on one claim.

    Attributes:
        hits: the rules hit, in file order, then the lists matched.
        action: allow, allowlisted, review or block.
    """

    hits: tuple[str, ...]
    action: str


Predicate = Callable[[Mapping[str, object]], bool]


def _predicate(condition: Condition) -> Predicate:
    """A plain-Python test of one condition: unknown values (None, NaN) never pass."""
    key = condition.feature
    if condition.op == IS_TRUE:

        def is_true(features: Mapping[str, object], key: str = key) -> bool:
            x = features.get(key)
            return x is not None and x == x and bool(x)  # noqa: PLR0124 - x != x is NaN

        return is_true
    compare = OPERATORS[condition.op]
    value = condition.value

    def holds(
        features: Mapping[str, object],
        key: str = key,
        compare: Callable[[Any, Any], Any] = compare,
        value: float = value,
    ) -> bool:
        x = features.get(key)
        return x is not None and x == x and bool(compare(x, value))  # noqa: PLR0124

    return holds


def _all_of(predicates: Sequence[Predicate]) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]
    first, second, *rest = predicates
    if not rest:
        return lambda features: first(features) and second(features)
    return lambda features: all(p(features) for p in predicates)


def _known(feature: str, dtype: pl.DataType) -> pl.Expr:
    column = pl.col(feature)
    return column.fill_nan(None) if dtype.is_float() else column


def _expression(conditions: Sequence[Condition], schema: pl.Schema) -> pl.Expr:
    """The vectorized test of a rule: true where every condition holds (null never fires)."""
    parts = []
    for c in conditions:
        column = _known(c.feature, schema[c.feature])
        if c.op == IS_TRUE:
            parts.append(column.cast(pl.Boolean))
        else:
            parts.append(OPERATORS[c.op](column, c.value))
    return reduce(operator.and_, parts).fill_null(value=False)


class RuleSet:
    """Loaded, checked rules, ready to evaluate on a frame or on one claim.

    Args:
        spec: the validated rules file.
        source: where it came from (for messages).
    """

    def __init__(self, spec: RulesFile, source: str = "<rules>") -> None:
        self.spec = spec
        self.source = source
        self.rules: tuple[_Rule, ...] = tuple(r for r in spec.rules if r.enabled)
        self._conditions = tuple(r.conditions() for r in self.rules)
        block = spec.lists.block.model_dump()
        allow = spec.lists.allow.model_dump()
        self.block_lists: dict[str, frozenset[str]] = {
            k: frozenset(v) for k, v in block.items() if v
        }
        self.allow_lists: dict[str, frozenset[str]] = {
            k: frozenset(v) for k, v in allow.items() if v
        }
        self._compiled: tuple[tuple[str, bool, Predicate], ...] = tuple(
            (rule.name, rule.action == BLOCK, _all_of([_predicate(c) for c in conditions]))
            for rule, conditions in zip(self.rules, self._conditions, strict=True)
        )
        self._block_keys = tuple((k, v, f"block_list.{k}") for k, v in self.block_lists.items())
        self._allow_keys = tuple((k, v, f"allow_list.{k}") for k, v in self.allow_lists.items())

    @classmethod
    def empty(cls) -> RuleSet:
        """No rules and no lists: every claim gets `allow`."""
        return cls(RulesFile(version=1), source="<no rules>")

    def __len__(self) -> int:
        return len(self.rules)

    def __repr__(self) -> str:
        return f"RuleSet({self.source!r}, rules={list(self.names)})"

    @property
    def names(self) -> tuple[str, ...]:
        """The enabled rules' names, in file order."""
        return tuple(r.name for r in self.rules)

    @property
    def hit_names(self) -> tuple[str, ...]:
        """Every name `rule_hits` can hold: the rules, then the non-empty lists."""
        lists = [name for _, _, name in (*self._block_keys, *self._allow_keys)]
        return (*self.names, *lists)

    def action_of(self, hit: str) -> str:
        """The action a hit name asks for (`allowlisted` for an allow list)."""
        if hit.startswith("block_list."):
            return BLOCK
        if hit.startswith("allow_list."):
            return ALLOWLISTED
        return next(r.action for r in self.rules if r.name == hit)

    @property
    def required_features(self) -> tuple[str, ...]:
        """The columns the rules and lists read, in first-use order."""
        seen: dict[str, None] = {}
        for conditions in self._conditions:
            seen.update(dict.fromkeys(c.feature for c in conditions))
        seen.update(dict.fromkeys(self.block_lists))
        seen.update(dict.fromkeys(self.allow_lists))
        return tuple(seen)

    def _check(self, schema: pl.Schema) -> None:
        missing = [f for f in self.required_features if f not in schema]
        if missing:
            msg = f"{self.source}: the rules read columns the claims lack: {', '.join(missing)}"
            raise RulesError(msg)

    def evaluate(self, frame: FrameT) -> FrameT:
        """Add `rule_hits` (list of names, file order) and `rule_action` to claims (vectorized).

        Args:
            frame: claims with the `required_features` columns (eager or lazy).

        Returns:
            The same frame type, rows in order, with the two columns added (replaced when
            present).

        Raises:
            RulesError: naming the columns the frame lacks.
        """
        schema = frame.collect_schema()
        self._check(schema)
        temp = [f"__rule_hit_{i}" for i in range(len(self.hit_names))]
        hits = [_expression(c, schema) for c in self._conditions]
        for key, values, _ in (*self._block_keys, *self._allow_keys):
            hits.append(pl.col(key).is_in(sorted(values)).fill_null(value=False))
        names = self.hit_names
        flags = [pl.col(t) for t in temp]
        blocks = [f for f, n in zip(flags, names, strict=True) if self.action_of(n) == BLOCK]
        allows = [f for f, n in zip(flags, names, strict=True) if self.action_of(n) == ALLOWLISTED]
        reviews = [f for f, n in zip(flags, names, strict=True) if self.action_of(n) == REVIEW]
        listed = [pl.when(f).then(pl.lit(n)) for f, n in zip(flags, names, strict=True)]
        action = (
            pl.when(pl.any_horizontal(blocks or [pl.lit(value=False)]))
            .then(pl.lit(BLOCK))
            .when(pl.any_horizontal(allows or [pl.lit(value=False)]))
            .then(pl.lit(ALLOWLISTED))
            .when(pl.any_horizontal(reviews or [pl.lit(value=False)]))
            .then(pl.lit(REVIEW))
            .otherwise(pl.lit(ALLOW))
        )
        rule_hits = pl.concat_list(listed or [pl.lit(None, dtype=pl.String)]).list.drop_nulls()
        return (
            frame.with_columns(h.alias(t) for h, t in zip(hits, temp, strict=True))
            .with_columns(rule_hits.alias("rule_hits"), action.alias("rule_action"))
            .drop(temp)
        )

    def evaluate_one(self, features: Mapping[str, object]) -> RuleResult:
        """The same verdict for one claim's features and request fields (plain Python).

        Args:
            features: feature name (and `device_id`, `ip_hash`, ... for the lists) to value;
                a missing key, None or NaN is unknown and never fires.
        """
        hits: list[str] = []
        block = review = allowed = False
        for name, is_block, test in self._compiled:
            if test(features):
                hits.append(name)
                if is_block:
                    block = True
                else:
                    review = True
        for key, values, name in self._block_keys:
            if features.get(key) in values:
                hits.append(name)
                block = True
        for key, values, name in self._allow_keys:
            if features.get(key) in values:
                hits.append(name)
                allowed = True
        if block:
            action = BLOCK
        elif allowed:
            action = ALLOWLISTED
        elif review:
            action = REVIEW
        else:
            action = ALLOW
        return RuleResult(tuple(hits), action)


# --- loading, with errors that name the file, the line and the field ---------------------


@dataclass(frozen=True)
class _Problem:
    line: int
    path: str
    message: str


def _error(source: str, problems: Sequence[_Problem]) -> RulesError:
    ordered = sorted(problems, key=lambda p: p.line)
    lines = [f"{source}:{p.line}: {p.path + ': ' if p.path else ''}{p.message}" for p in ordered]
    return RulesError("\n".join(lines))


def _strip_tags(loc: tuple[str | int, ...]) -> tuple[tuple[str | int, ...], str | None]:
    """Drop the discriminator tag pydantic puts after `rules[i]`; return it separately."""
    if len(loc) > 2 and loc[0] == "rules" and isinstance(loc[1], int) and loc[2] in KINDS:
        return (*loc[:2], *loc[3:]), str(loc[2])
    return loc, None


def _dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line(root: yaml.Node, loc: Sequence[str | int]) -> int:
    """The 1-based line of the deepest YAML node on `loc` (a key's line for a mapping)."""
    node: yaml.Node = root
    line = root.start_mark.line
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = [(k, v) for k, v in node.value if k.value == str(part)]
            if not found:
                break
            key, node = found[-1]
            line = key.start_mark.line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line
        else:
            break
    return line + 1


def _known_fields(loc: Sequence[str | int], tag: str | None) -> list[str]:
    models: dict[tuple[str | int, ...], type[BaseModel]] = {
        (): RulesFile,
        ("lists",): Lists,
        ("lists", "block"): BlockLists,
        ("lists", "allow"): AllowLists,
    }
    model = models.get(tuple(loc))
    if tag is not None and len(loc) == 2:  # rules[i]
        model = KINDS[tag]
    if model is None:
        return []
    common = list(_Rule.model_fields)
    own = [f for f in model.model_fields if f not in common]
    return own + common if issubclass(model, _Rule) else own


def _choices(expected: str) -> str:
    return ", ".join(re.findall(r"'([^']*)'", expected)) or expected


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"text {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"


TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "text",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _message(error: ErrorDetails, loc: Sequence[str | int], tag: str | None) -> str:
    kind, value = error["type"], error.get("input")
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    field = next((p for p in reversed(loc) if isinstance(p, str)), "value")
    if kind == "extra_forbidden":
        known = _known_fields(loc[:-1], tag)
        text = f"unknown field {field!r}" + (f" (known: {', '.join(known)})" if known else "")
    elif kind == "missing":
        text = f"missing field {field!r}"
    elif kind == "literal_error":
        text = f"unknown {field} {value!r} (known: {_choices(str(ctx.get('expected', '')))})"
        if field == "op" and value == "":
            text += '; quote the operator: a bare > starts a YAML block (op: ">")'
    elif kind == "union_tag_invalid":
        hint = "; block and allow lists go under `lists:`" if ctx.get("tag") == "list" else ""
        text = f"unknown kind {ctx.get('tag')!r} (known: {', '.join(KINDS)}){hint}"
    elif kind == "union_tag_not_found":
        text = f"missing field 'kind' (one of: {', '.join(KINDS)})"
    elif kind in TYPE_WORDS:
        text = f"expected {TYPE_WORDS[kind]}, got {_type_name(value)}"
    elif kind == "value_error":
        text = str(error["msg"]).removeprefix("Value error, ")
    elif kind == "string_pattern_mismatch":
        text = f"{value!r} is not a valid name (letters, digits, _ and -, starting with a letter)"
    else:
        text = str(error["msg"])
        text = f"{text[:1].lower()}{text[1:]}, got {value!r}"
    return text


def _problems(error: ValidationError, root: yaml.Node) -> list[_Problem]:
    out = []
    for detail in error.errors():
        loc, tag = _strip_tags(tuple(detail["loc"]))
        if detail["type"] in {"union_tag_invalid", "union_tag_not_found"}:
            loc = (*loc, "kind")
        where = loc[:-1] if detail["type"] == "missing" else loc
        out.append(_Problem(_line(root, where), _dotted(loc), _message(detail, loc, tag)))
    return out


def _duplicate_keys(node: yaml.Node, path: tuple[str | int, ...] = ()) -> list[_Problem]:
    out: list[_Problem] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name, line = str(key.value), key.start_mark.line + 1
            if name in seen:
                out.append(
                    _Problem(
                        line, _dotted((*path, name)), f"repeated key (first at line {seen[name]})"
                    )
                )
            seen.setdefault(name, line)
            out += _duplicate_keys(value, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out += _duplicate_keys(item, (*path, i))
    return out


def _duplicate_names(spec: RulesFile, root: yaml.Node) -> list[_Problem]:
    first: dict[str, int] = {}
    out = []
    for i, rule in enumerate(spec.rules):
        line = _line(root, ("rules", i, "name"))
        if rule.name in first:
            out.append(
                _Problem(
                    line,
                    f"rules[{i}].name",
                    f"duplicate rule name {rule.name!r} (first at line {first[rule.name]})",
                )
            )
        first.setdefault(rule.name, line)
    return out


def parse_rules(text: str, source: str = "<rules>") -> RuleSet:
    """Check and compile the YAML text of a rules file.

    Args:
        text: the file's content.
        source: its name in messages.

    Raises:
        RulesError: listing each problem as `source:line: field: what is wrong`.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        msg = f"{source}{line}: not valid YAML: {problem}"
        raise RulesError(msg) from None
    if root is None or data is None:
        msg = f"{source}: the rules file is empty (expected a mapping with `version` and `rules`)"
        raise RulesError(msg)
    if not isinstance(data, dict):
        msg = (
            f"{source}:{root.start_mark.line + 1}: expected a mapping with `version` and "
            f"`rules`, got {_type_name(data)}"
        )
        raise RulesError(msg)
    repeated = _duplicate_keys(root)
    if repeated:
        raise _error(source, repeated)
    try:
        spec = RulesFile.model_validate(data)
    except ValidationError as error:
        raise _error(source, _problems(error, root)) from None
    duplicates = _duplicate_names(spec, root)
    if duplicates:
        raise _error(source, duplicates)
    return RuleSet(spec, source)


def load_rules(path: Path | str) -> RuleSet:
    """Read, check and compile a rules file.

    Args:
        path: the YAML file.

    Raises:
        RulesError: for a missing or unreadable file, or each problem in it, as
            `path:line: field: what is wrong`.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        msg = f"{path}: rules file not found"
        raise RulesError(msg) from None
    except (OSError, UnicodeDecodeError) as error:
        msg = f"{path}: cannot read the rules file: {error}"
        raise RulesError(msg) from None
    return parse_rules(text, str(path))
