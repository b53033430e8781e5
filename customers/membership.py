"""Membership, without any server: tiers that follow spend over a rolling window, their benefits, and points
earned from spend, spent oldest first and expiring after a set time.

Everything is computed from two ledgers (what the customer spent; points they spent), so nothing has to be
"expired" by a job for the balance to be right: a lot past its lifetime simply no longer counts.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

TIER_WINDOW = dt.timedelta(days=365)  # tiers follow spend over the last year
POINTS_LIFETIME = dt.timedelta(days=365)  # a point expires a year after it was earned
EXPIRING_SOON = dt.timedelta(days=30)


@dataclass(frozen=True)
class Tier:
    name: str
    min_spend: Decimal  # over TIER_WINDOW
    discount_pct: int
    points_multiplier: Decimal  # points per unit of currency spent
    free_cleaning_visits: int  # a year


TIERS: tuple[Tier, ...] = (
    Tier("basic", Decimal(0), 0, Decimal(1), 0),
    Tier("silver", Decimal(1000), 5, Decimal("1.25"), 1),
    Tier("gold", Decimal(5000), 10, Decimal("1.5"), 2),
    Tier("platinum", Decimal(15000), 15, Decimal(2), 4),
)
TIER_NAMES = tuple(tier.name for tier in TIERS)


@dataclass(frozen=True)
class Spend:
    amount: Decimal
    at: dt.datetime


@dataclass(frozen=True)
class PointsSpend:
    points: int
    at: dt.datetime


@dataclass
class PointsLot:
    """Points earned by one spend: how many are left, and when they expire."""

    points: int
    earned_at: dt.datetime
    expires_at: dt.datetime
    remaining: int = -1

    def __post_init__(self) -> None:
        if self.remaining < 0:
            self.remaining = self.points


@dataclass
class PointsState:
    balance: int
    earned: int
    spent: int
    expired: int
    lots: list[PointsLot] = field(default_factory=list)  # oldest first, with what is left of each
    expiring_soon: int = 0  # of the balance, what expires within EXPIRING_SOON
    next_expiry: dt.datetime | None = None


def tier_for_spend(spend: Decimal) -> Tier:
    """The highest tier whose threshold the spend reaches (the first for a net refund)."""
    return ([tier for tier in TIERS if spend >= tier.min_spend] or [TIERS[0]])[-1]


def spend_in_window(spends: Sequence[Spend], at: dt.datetime, *, inclusive: bool = True) -> Decimal:
    """What was spent in the TIER_WINDOW up to `at` (with or without what was spent at `at` itself)."""
    start = at - TIER_WINDOW
    return sum(
        (s.amount for s in spends if start < s.at and (s.at <= at if inclusive else s.at < at)), Decimal(0)
    )


def tier_at(spends: Sequence[Spend], at: dt.datetime) -> Tier:
    """The customer's tier at a moment: by their spend over the window ending then."""
    return tier_for_spend(spend_in_window(spends, at))


def points_lots(spends: Sequence[Spend]) -> list[PointsLot]:
    """The points each spend earned: its amount (whole units) times the multiplier of the tier the customer held
    just before it; refunds (negative amounts) earn nothing."""
    lots = []
    for spend in sorted(spends, key=lambda s: s.at):
        if spend.amount <= 0:
            continue
        multiplier = tier_for_spend(spend_in_window(spends, spend.at, inclusive=False)).points_multiplier
        points = math.floor(spend.amount * multiplier)
        if points > 0:
            lots.append(PointsLot(points, spend.at, spend.at + POINTS_LIFETIME))
    return lots


def points_state(lots: Sequence[PointsLot], spent: Sequence[PointsSpend], now: dt.datetime) -> PointsState:
    """The balance at `now`: each spend takes from the oldest lots not yet expired at its time; what is left of a
    lot past its expiry is lost. A spend larger than the balance then takes what there is (the service refuses
    such spends, so this only guards the arithmetic)."""
    lots = [PointsLot(lot.points, lot.earned_at, lot.expires_at) for lot in sorted(lots, key=lambda lot: lot.earned_at)]
    total_spent = 0
    for spend in sorted(spent, key=lambda s: s.at):
        if spend.at > now:
            continue
        wanted = spend.points
        for lot in lots:
            if wanted == 0:
                break
            if lot.earned_at <= spend.at < lot.expires_at and lot.remaining > 0:
                taken = min(lot.remaining, wanted)
                lot.remaining -= taken
                wanted -= taken
        total_spent += spend.points - wanted
    earned = sum(lot.points for lot in lots if lot.earned_at <= now)
    live = [lot for lot in lots if lot.earned_at <= now < lot.expires_at]
    expired = sum(lot.remaining for lot in lots if lot.expires_at <= now)
    balance = sum(lot.remaining for lot in live)
    soon = [lot for lot in live if lot.remaining > 0 and lot.expires_at <= now + EXPIRING_SOON]
    upcoming = [lot.expires_at for lot in live if lot.remaining > 0]
    return PointsState(
        balance=balance,
        earned=earned,
        spent=total_spent,
        expired=expired,
        lots=live,
        expiring_soon=sum(lot.remaining for lot in soon),
        next_expiry=min(upcoming) if upcoming else None,
    )
