"""The CLI's argument types: deployment ids, counts, durations and seconds, each bounded to
what the state store, `timedelta` and `time.sleep` can hold.

Whole numbers are ASCII digits only (`int()` also takes `١`, `²` fails later, `1_000`
passes), so `status ١` is not deployment 1 and `resume 99999999999999999999` is refused
here rather than by the database driver."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

import click

# Deployment and event ids are 32-bit INTEGER columns (PostgreSQL's limit; SQLite allows more).
MAX_ID = 2**31 - 1
_DIGITS = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def deployment_id_of(ref: str) -> int | None:
    """The deployment id a REF of ASCII digits names (raising ConfigError past MAX_ID), or
    None when REF is an endpoint name. Endpoint names are never all digits, so a REF is
    never both."""
    from .errors import ConfigError

    if _DIGITS.fullmatch(ref) is None:
        if ref.isdigit():  # '١', '²': digits to Unicode, but neither an id nor a valid endpoint name
            raise ConfigError(
                f"{ref!r} is not a deployment id: ids are written with the digits 0-9",
                hint="see `orchestrate list` for the ids there are",
            )
        return None
    if len(ref) > 10 or int(ref) > MAX_ID:
        raise ConfigError(
            f"{ref} is not a deployment id (ids go up to {MAX_ID})", hint="see `orchestrate list` for the ids there are"
        )
    return int(ref)


class WholeNumber(click.ParamType):  # type: ignore[type-arg]
    """An integer of ASCII digits in [minimum, maximum]."""

    name = "integer"

    def __init__(self, minimum: int, maximum: int, *, what: str = "a whole number") -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.what = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            text = str(value).strip()
            if _DIGITS.fullmatch(text.removeprefix("-")) is None:
                self.fail(f"{value!r} is not {self.what} (digits 0-9 only)", param, ctx)
            number = int(text) if len(text) <= 20 else self.maximum + 1
        if not self.minimum <= number <= self.maximum:
            self.fail(f"{value} is not {self.what} from {self.minimum} to {self.maximum}", param, ctx)
        return number


class Seconds(click.ParamType):  # type: ignore[type-arg]
    """A finite number of seconds in [minimum, maximum] (`inf` and `nan` are refused)."""

    name = "seconds"

    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        text = str(value).strip()
        if _DECIMAL.fullmatch(text) is None or len(text) > 40:
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        number = float(text)
        if not (math.isfinite(number) and self.minimum <= number <= self.maximum):
            self.fail(f"{value} is not a number of seconds from {self.minimum:g} to {self.maximum:g}", param, ctx)
        return number


class Duration(click.ParamType):  # type: ignore[type-arg]
    """`45s`, `30m`, `12h`, `90d`, `2w`, at most 100 years, as a timedelta."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dt.timedelta:
        from .config import parse_duration
        from .errors import ConfigError

        if isinstance(value, dt.timedelta):
            return value
        try:
            return parse_duration(str(value))
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


DEPLOYMENT_ID = WholeNumber(1, MAX_ID, what="a deployment id")
COUNT = WholeNumber(1, 1_000_000, what="a count")
DURATION = Duration()
