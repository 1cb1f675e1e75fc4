"""Significance tests for comparing strategies (A/B): small, exact formulas with scipy's distributions.

Kept apart from the SQL of the signals stage so that each test can be checked against a known case.
"""

from __future__ import annotations

import math


def two_proportion_z(x1: float, n1: float, x2: float, n2: float) -> tuple[float | None, float | None]:
    """Pooled two-proportion z-test of p1 = x1/n1 against p2 = x2/n2: (z, two-sided p-value).

    z > 0 when p1 > p2. Equivalent to Pearson's chi-square on the 2x2 table without continuity
    correction (z**2 == chi2). None when either arm is empty or the pooled share is 0 or 1.
    """
    from scipy.stats import norm

    if n1 <= 0 or n2 <= 0:
        return None, None
    pooled = (x1 + x2) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if var <= 0:
        return None, None
    z = (x1 / n1 - x2 / n2) / math.sqrt(var)
    return z, float(2 * norm.sf(abs(z)))


def mann_whitney(a: list[float], b: list[float]) -> tuple[float | None, float | None]:
    """Mann-Whitney U test of sample a against b (two-sided, with the tie correction): (U of a, p-value).

    Right for ordinal scores such as CSAT 1-5, where a t-test's normality assumption does not hold.
    """
    from scipy.stats import mannwhitneyu

    if len(a) == 0 or len(b) == 0:
        return None, None
    if len(set(a) | set(b)) == 1:  # every score identical: no evidence of any difference
        return len(a) * len(b) / 2, 1.0
    res = mannwhitneyu(a, b, alternative="two-sided", method="asymptotic")
    return float(res.statistic), float(res.pvalue)


def n_per_arm(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Sample size per arm for a two-sided two-proportion test to detect p1 vs p2 with `power`."""
    from scipy.stats import norm

    if p1 == p2 or not (0 <= p1 <= 1 and 0 <= p2 <= 1):
        return None
    za, zb = norm.isf(alpha / 2), norm.isf(1 - power)
    pbar = (p1 + p2) / 2
    n = (za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / (p1 - p2) ** 2
    return math.ceil(n)
