"""The search space: compact domains (`choice[4, 8]`, `loguniform[1e-5, 1e-3]`, ...) over dotted
config paths, their conversion to Ray Tune domains, and the checks that every path names a
config field and every value a domain can produce gives a valid config."""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

KINDS = ("choice", "grid", "uniform", "loguniform", "randint")
# Sections a trial cannot change: its resources are planned from `scaling` before trials start,
# and storage / names / the sweep itself belong to the sweep.
NOT_SEARCHABLE = ("scaling", "storage", "run_name", "tune")
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_SPEC = re.compile(r"^\s*([A-Za-z_]+)\s*\[(.*)\]\s*$", re.S)


@dataclass(frozen=True)
class Domain:
    kind: str
    args: tuple  # choice/grid: the values; uniform/loguniform/randint: (low, high), both included

    def values_to_check(self) -> tuple:
        """Values that must each give a valid config: every choice, or both ends of a range."""
        return self.args

    def to_tune(self) -> Any:
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.args))
        if self.kind == "grid":
            return tune.grid_search(list(self.args))
        low, high = self.args
        if self.kind == "uniform":
            return tune.uniform(low, high)
        if self.kind == "loguniform":
            return tune.loguniform(low, high)
        return tune.randint(low, high + 1)  # Tune's upper bound is exclusive

    def as_grid(self) -> "Domain":
        if self.kind not in ("choice", "grid"):
            raise ValueError(f"search_alg grid needs listed values (choice[...] or grid[...]), not {self.kind}[...]")
        return Domain("grid", self.args)


def _number(value: Any) -> Any:
    """YAML 1.1 reads `1e-5` (no dot) as a string; treat number-looking strings as numbers."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        text = value.strip()
        return int(text) if re.fullmatch(r"[-+]?\d+", text) else float(text)
    return value


def parse_domain(spec: Any) -> Domain:
    """`loguniform[1e-5, 1e-3]` -> Domain('loguniform', (1e-05, 0.001)); ValueError says what is wrong."""
    match = _SPEC.match(spec) if isinstance(spec, str) else None
    if not match:
        raise ValueError(f"expected KIND[...] with KIND one of {', '.join(KINDS)}, e.g. 'choice[4, 8, 16]' "
                         f"(got {spec!r})")
    kind, inner = match.group(1), match.group(2)
    if kind not in KINDS:
        hint = difflib.get_close_matches(kind, KINDS, n=1)
        raise ValueError(f"unknown domain '{kind}'" + (f"; did you mean '{hint[0]}'?" if hint else "")
                         + f" (known: {', '.join(KINDS)})")
    try:
        args = yaml.safe_load(f"[{inner}]")
    except yaml.YAMLError:
        raise ValueError(f"cannot read the values of {spec!r} (a YAML list inside the brackets)") from None
    args = [_number(a) for a in args]
    if kind in ("choice", "grid"):
        if not args:
            raise ValueError(f"{kind}[...] needs at least one value")
        return Domain(kind, tuple(args))
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise ValueError(f"{kind}[low, high] needs two numbers (got {spec!r})")
    low, high = args
    if not low < high:
        raise ValueError(f"{kind}[low, high] needs low < high (got {spec!r})")
    if kind == "loguniform" and low <= 0:
        raise ValueError(f"loguniform needs low > 0 (got {spec!r})")
    if kind == "randint" and not (float(low).is_integer() and float(high).is_integer()):
        raise ValueError(f"randint needs whole numbers (got {spec!r})")
    if kind == "randint":
        low, high = int(low), int(high)
    return Domain(kind, (low, high))


def check_path(path: str, root: type[BaseModel]) -> str | None:
    """None if `path` names a field of the config (whose top model is `root`) that trials may
    change, else the problem."""
    parts = path.split(".")
    if parts[0] in NOT_SEARCHABLE:
        return (f"'{path}': {parts[0]} cannot be searched (trial resources are planned from `scaling`; "
                "storage and names belong to the sweep)")
    annotation: Any = root
    for i, part in enumerate(parts):
        nxt = _step(annotation, part)
        if nxt is None:
            parent = ".".join(parts[:i]) or "the config"
            keys = _keys(annotation)
            if keys is None:
                return f"'{path}': '{parent}' is a value, not a section"
            hint = difflib.get_close_matches(part, keys, n=1, cutoff=0.5)
            return (f"'{path}': '{part}' is not a field of {parent}" + (f"; did you mean '{hint[0]}'?" if hint else "")
                    + (f" (fields: {', '.join(keys)})" if keys else ""))
        annotation = nxt
    return None


def _branches(annotation: Any) -> list[Any]:
    """An annotation's alternatives (Annotated / Optional / Union flattened)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _branches(typing.get_args(annotation)[0])
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        return [b for a in typing.get_args(annotation) for b in _branches(a)]
    return [annotation]


def _step(annotation: Any, part: str) -> Any:
    for branch in _branches(annotation):
        if isinstance(branch, type) and issubclass(branch, BaseModel):
            if part in branch.model_fields:
                return branch.model_fields[part].annotation
            continue
        origin, args = typing.get_origin(branch), typing.get_args(branch)
        if origin is list and part.lstrip("-").isdigit():
            return args[0] if args else Any
        if origin is dict:
            return args[1] if len(args) == 2 else Any
    return None  # (a union of stage types matches when any of them has the field)


def _keys(annotation: Any) -> list[str] | None:
    keys: list[str] = []
    found = False
    for branch in _branches(annotation):
        if isinstance(branch, type) and issubclass(branch, BaseModel):
            found = True
            keys += [k for k in branch.model_fields if k not in keys]
        elif typing.get_origin(branch) in (list, dict):
            found = True
    return keys if found else None
