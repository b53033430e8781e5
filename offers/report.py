"""Did it work? The uplift of an offer against its holdout, with a confidence interval, without any server.

Uplift is the conversion of the customers offered minus that of the eligible customers held out at random
(intention to treat: an offered customer counts whether or not the contact policy let the message out, as a
held-out one counts whatever they would have been allowed). The interval is Newcombe's hybrid score interval for
a difference of two proportions (method 10 of Newcombe 1998), built from the two groups' Wilson intervals: it
keeps its coverage for small groups and rare conversions, where the plain Wald interval is too narrow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

CONFIDENCE = 0.95
METHOD = "Newcombe hybrid score interval for a difference of proportions (intention to treat)"


@dataclass(frozen=True)
class Uplift:
    treated_rate: float | None
    holdout_rate: float | None
    uplift: float | None
    low: float | None
    high: float | None


def wilson(successes: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson's score interval for a proportion."""
    if trials <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    # the observed rate always lies inside; at 0 and 1 rounding could put it a hair outside
    low = 0.0 if successes == 0 else max(0.0, min(centre - half, p))
    high = 1.0 if successes == trials else min(1.0, max(centre + half, p))
    return low, high


def uplift(
    treated_converted: int, treated: int, holdout_converted: int, holdout: int, confidence: float = CONFIDENCE
) -> Uplift:
    """Conversion rates of both groups, their difference, and its interval (None where a group is empty)."""
    treated_rate = treated_converted / treated if treated else None
    holdout_rate = holdout_converted / holdout if holdout else None
    if treated_rate is None or holdout_rate is None:
        return Uplift(treated_rate, holdout_rate, None, None, None)
    l1, u1 = wilson(treated_converted, treated, confidence)
    l2, u2 = wilson(holdout_converted, holdout, confidence)
    difference = treated_rate - holdout_rate
    low = difference - math.sqrt((treated_rate - l1) ** 2 + (u2 - holdout_rate) ** 2)
    high = difference + math.sqrt((u1 - treated_rate) ** 2 + (holdout_rate - l2) ** 2)
    return Uplift(treated_rate, holdout_rate, difference, max(-1.0, low), min(1.0, high))
