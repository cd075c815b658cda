"""Pacing: how much of a daily budget a campaign may have spent (or reserved) by now.

ASAP may spend its whole daily budget as fast as traffic allows. Even pacing follows a
straight line from midnight UTC to the next midnight, `ahead_seconds` ahead of it so a
campaign can bid from the first minute of the day and small budgets are not starved.
The limit goes into the same Redis script as the budget check, so it holds across
replicas exactly like the budget does.
"""

from __future__ import annotations

from typing import Final

SECONDS_PER_DAY: Final = 86_400
NO_LIMIT: Final = -1
"""A daily limit meaning "no daily budget" (the campaign has only a total budget)."""

ASAP: Final = "asap"
EVEN: Final = "even"


def utc_day(now: float) -> int:
    """Days since the Unix epoch (UTC): the daily budget's bucket."""
    return int(now // SECONDS_PER_DAY)


def daily_limit(daily_budget_micros: int, pacing: str, now: float, ahead_seconds: int) -> int:
    """Most a campaign may have spent plus reserved today, or `NO_LIMIT`.

    A daily budget of 0 or less means the campaign has no daily cap (only its total).
    """
    if daily_budget_micros <= 0:
        return NO_LIMIT
    if pacing == ASAP:
        return daily_budget_micros
    elapsed = now - utc_day(now) * SECONDS_PER_DAY + ahead_seconds
    if elapsed >= SECONDS_PER_DAY:
        return daily_budget_micros
    return daily_budget_micros * int(elapsed) // SECONDS_PER_DAY
