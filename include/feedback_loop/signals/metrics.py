"""Signals: every feedback signal of the matrix, per day and scope, and the improvement-action queue.

One run for day D (an in-memory DuckDB over the lake, nothing loaded into pandas) writes three marts:

- `marts/signal_metrics/dt=D`: long format, one row per (metric_date, metric, dimension, dimension_value)
  with numerator, denominator, value, sample size, standard error, whether the value is final, and the
  comparison with the trailing baseline (change, z-score, beyond noise).
- `marts/action_queue/dt=D`: the signals that crossed a threshold (a level, or a change beyond noise),
  routed to the component the signal matrix says to act on, with their evidence.
- `marts/signal_ab_tests/dt=D`: strategies compared on resolution, reopens and CSAT, with a significance
  test and the sample size it rests on.

How it works: every metric is first computed per *unit* (a conversation, a survey answer, a review, a KB
query, a step...) into one table `units(metric, metric_date, unit_id, conversation_id, intent, channel,
strategy, mode, extra_dim, extra_value, base, num, den)`. Every value is then a ratio of sums
(sum(num) / sum(den)) or a percentile of `num`, grouped by each dimension; the same table gives the
example conversations of an action. Day metrics describe the rows exported on D and are final at once.
Windowed metrics (reopen within 24 h, re-engagement within 7 days, what humans did within the review
window) describe a cohort day X and are final once X + window + lateness allowance <= D: after that the
data-quality stage rejects any row that could still change them. The run for D recomputes every cohort
whose value is not final yet, so late data lands in the day it belongs to. docs/signals.md defines each
metric precisely.

Where things are: the metric registry (names, thresholds, routing) in registry.py, each metric's units in
units.py, the long SQL in sql/*.sql (dates and settings bound as parameters), the A/B statistics in
abtest.py; this module runs the stages in order and writes the marts.
"""

from __future__ import annotations

import json
import logging
from datetime import date

from feedback_loop.lake.files import Lake
from feedback_loop.lake.sql import exact_sum_parts, exact_sum_total, literal, literal_list
from feedback_loop.settings import Settings
from feedback_loop.signals.registry import (  # noqa: F401 - re-exported: the names other modules import from here
    AB_MART,
    AB_METRICS,
    DIMENSIONS,
    METRIC_BY_NAME,
    METRICS,
    METRICS_MART,
    QUEUE_MART,
    ROUTES,
    Metric,
    metric_docs,
    thresholds,
)
from feedback_loop.signals.units import REOPEN_COHORTS, Plan, load_inputs, sql, units_sql

log = logging.getLogger(__name__)

_KEY = "metric, metric_date, dimension, dimension_value"
# The temp tables of the run's units (units.py), dropped once the action queue has read them.
_RUN_TABLES = ("run_ev", "run_conv", "run_sent", "run_per_conv", "run_srv", "run_rev", "run_chk", "run_reopen",
               "run_reeng", "run_coh", "run_auto")


def run_signals(settings: Settings, day: date) -> dict:
    """Compute the signal metrics, the A/B tests and the action queue of `day`; return a small summary."""
    from feedback_loop.datasets import pii
    from feedback_loop.lake.duck import connect
    from feedback_loop.signals import sentiment

    dt = day.isoformat()
    lake = Lake(settings.lake)
    if not lake.has_partition("marts", "conversation_facts", dt):
        raise RuntimeError(f"no marts/conversation_facts for {dt}: run the model stage first")
    plan = Plan.of(settings, day)
    con = connect()
    try:
        sentiment.register(con)
        pii.register_duckdb(con, settings)  # labels come from data: redact them like free text
        _defs_table(con, settings, plan)
        load_inputs(con, lake, settings, plan)
        units = units_sql(con, settings, plan, plan.d(0), plan.d(0), "run")
        # units is a view, not a table: materialising its millions of rows cost more than computing them, and
        # each reader needs only some metrics' branches of the UNION ALL (DuckDB prunes the others on the
        # constant metric name): the aggregates read every branch once, the examples only the raised metrics'.
        con.execute(f"CREATE TEMP VIEW units AS {units}")
        n_units = _aggregate(con, plan)
        _baseline(con, lake, settings, plan)
        day_param = {"day": dt}
        lake.write_query(con, "SELECT $day::DATE AS dt, * REPLACE (redact_pii(dimension_value) AS dimension_value) "
                              f"FROM metrics ORDER BY {_KEY}", "marts", METRICS_MART, dt, params=day_param)
        _action_queue(con, lake, settings, plan)  # the last reader of units
        # Temp tables live in memory under the connection's memory limit: dropped once nothing reads them.
        con.execute("DROP VIEW units; " + " ".join(f"DROP TABLE IF EXISTS {t};" for t in _RUN_TABLES))
        ab_rows = _ab_tests(con, settings, plan)
        con.execute(f"DROP TABLE IF EXISTS {REOPEN_COHORTS}")  # shared by the run's and the A/B window's units
        lake.write_query(con, "SELECT $day::DATE AS dt, * REPLACE (redact_pii(control) AS control, "
                              "redact_pii(treatment) AS treatment) FROM ab ORDER BY metric, treatment", "marts", AB_MART,
                         dt, params=day_param)
        lake.write_query(con, "SELECT $day::DATE AS dt, * REPLACE (redact_pii(scope_value) AS scope_value) "
                              "FROM queue ORDER BY severity DESC, action_id",
                         "marts", QUEUE_MART, dt, params=day_param)
        counts = con.execute(
            "SELECT (SELECT count(*) FROM metrics), (SELECT count(*) FROM queue), "
            "$units, (SELECT count(*) FROM metrics WHERE NOT is_final)", {"units": n_units}
        ).fetchall()[0]
        by_component = dict(con.execute(
            "SELECT target_component, count(*) FROM queue GROUP BY 1 ORDER BY 1").fetchall())
    finally:
        con.close()
    out = {"dt": dt, "metric_rows": counts[0], "provisional_rows": counts[3], "units": counts[2],
           "actions": counts[1], "actions_by_component": by_component, "ab_tests": ab_rows,
           "metrics": lake.partition_file("marts", METRICS_MART, dt),
           "action_queue": lake.partition_file("marts", QUEUE_MART, dt)}
    log.info("signals %s: %s metric rows (%s provisional), %s actions %s", dt, out["metric_rows"],
             out["provisional_rows"], out["actions"], by_component)
    return out


def _names(metrics) -> str:
    """Registry names as SQL string constants (checked against the registry: code, never data). Constants,
    not a bound list, so that DuckDB prunes the units view's branches of the other metrics."""
    unknown = [m for m in metrics if m not in METRIC_BY_NAME]
    if unknown:
        raise ValueError(f"not metrics of the registry: {unknown}")
    return ", ".join(literal(m) for m in metrics)


def _defs_table(con, settings: Settings, p: Plan) -> None:
    """The metric registry, thresholds and windows as a DuckDB table (joined by the SQL below)."""
    th = thresholds(settings)
    con.execute("""CREATE OR REPLACE TEMP TABLE defs (metric VARCHAR, kind VARCHAR, matrix_signal VARCHAR,
        agg VARCHAR, share BOOLEAN, higher_is_better BOOLEAN, window_name VARCHAR, window_days INTEGER,
        final_lag INTEGER, component VARCHAR, improvement_action VARCHAR, min_level DOUBLE, max_level DOUBLE,
        min_change DOUBLE, min_change_rel DOUBLE)""")
    con.executemany("INSERT INTO defs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        (m.name, m.kind, m.matrix_signal, m.agg, m.share, m.higher_is_better, m.window, p.windows[m.window],
         p.final_lag(m.window), m.component, m.action, th[m.name]["min"], th[m.name]["max"],
         th[m.name]["min_change"], th[m.name]["min_change_rel"]) for m in METRICS])
    con.execute("CREATE OR REPLACE TEMP TABLE routes (metric VARCHAR, dimension VARCHAR, dimension_value VARCHAR, "
                "component VARCHAR, improvement_action VARCHAR)")
    con.executemany("INSERT INTO routes VALUES (?, ?, ?, ?, ?)",
                    [(m, d, v, c[0], c[1]) for (m, d, v), c in ROUTES.items()])


# The scope of a GROUPING SETS row: 'all' or the one dimension it is grouped by, and that dimension's value.
_SCOPE = ("metric, metric_date, CASE " + " ".join(f"WHEN grouping({d}) = 0 THEN '{d}'" for d in DIMENSIONS)
          + " ELSE 'all' END AS dimension, CASE " + " ".join(f"WHEN grouping({d}) = 0 THEN {d}" for d in DIMENSIONS)
          + " ELSE 'all' END AS dimension_value")
_SETS = ", ".join(["(metric, metric_date)"] + [f"(metric, metric_date, {d})" for d in DIMENSIONS])


def _by_scope_sql(aggregates: str, metrics: list[str]) -> str:
    """`aggregates` of the units of `metrics` per (metric, metric_date, dimension, dimension_value): the
    'all' scope and each of DIMENSIONS over the base units, and each extra breakdown over its own units."""
    names = _names(metrics)
    return f"""
        SELECT {_SCOPE}, {aggregates}
        FROM units WHERE base AND metric IN ({names}) GROUP BY GROUPING SETS ({_SETS})
        UNION ALL
        SELECT metric, metric_date, extra_dim, extra_value, {aggregates}
        FROM units WHERE extra_dim IS NOT NULL AND metric IN ({names})
        GROUP BY metric, metric_date, extra_dim, extra_value"""


def _by_scope_of_cells_sql(cells: str, totals: str, metrics: list[str]) -> str:
    """`_by_scope_sql` for aggregates that add up: `cells` aggregates the units per cell (metric, day, every
    dimension, base, extra breakdown: thousands of rows for millions of units), `totals` adds a scope's cells.
    Each scope then reads the cells, not every unit again: with the exact sums' decimals, five passes over
    ~10 M units were a third of the signals stage at 2 M events."""
    names, key = _names(metrics), f"metric, metric_date, {', '.join(DIMENSIONS)}, base, extra_dim, extra_value"
    return f"""
        WITH cells AS MATERIALIZED (
            SELECT {key}, {cells} FROM units WHERE (base OR extra_dim IS NOT NULL) AND metric IN ({names})
            GROUP BY {key})
        SELECT {_SCOPE}, {totals}
        FROM cells WHERE base GROUP BY GROUPING SETS ({_SETS})
        UNION ALL
        SELECT metric, metric_date, extra_dim, extra_value, {totals}
        FROM cells WHERE extra_dim IS NOT NULL
        GROUP BY metric, metric_date, extra_dim, extra_value"""


def _aggregate(con, p: Plan) -> int:
    """`cur`: every metric of this run, by day and by each dimension, with its delta-method standard error.

    Returns the number of units: the base units (each is in its metric's 'all' scope once) plus the
    others (the extra breakdowns' own units, each in one extra scope)."""
    # Every scope in one pass per aggregate: GROUPING SETS over the base units (all + each dimension) and
    # one GROUP BY over the units of the extra breakdowns, instead of a table with a copy of every unit per
    # scope (six copies of millions of rows, which no longer fit the memory limit and spilled).
    # Ratio of sums R = sum(num) / sum(den); its standard error by the delta method:
    # se = sqrt(var(num - R den) / n) / mean(den), var(num - R den) = var(num) + R^2 var(den) - 2 R cov.
    # Every sum as a decimal (lake.sql.exact_sum_parts / exact_sum_total), which adds exactly in any order: doubles summed by DuckDB's
    # threads in the order they meet the rows changed the last bits of 72 numerators (and a standard error)
    # from one run of a day to the next. The variances and the covariance from those exact moments.
    ratio = [m.name for m in METRICS if m.agg == "ratio"]
    both = "CASE WHEN num IS NOT NULL AND den IS NOT NULL THEN {} END"
    # (Products to 14 decimals: a unit's value of 0.001 squared keeps its digits.) Sums of sums: the units are
    # summed per cell first (`_by_scope_of_cells_sql`).
    moments = (("s_num", "num", 10), ("s_den", "den", 10), ("s_num2", "num * num", 14), ("s_den2", "den * den", 14),
               ("s_num_b", both.format("num"), 10), ("s_den_b", both.format("den"), 10), ("s_nd", "num * den", 14))
    counts = {"sample_size": "*", "n_num": "num", "n_den": "den", "n_nd": "num * den"}
    cells = ", ".join([exact_sum_parts(expr, scale, name) for name, expr, scale in moments]
                      + [f"count({expr}) AS c_{name}" for name, expr in counts.items()])
    totals = ", ".join(["sum(c_sample_size)::BIGINT AS sample_size"]
                       + [f"{exact_sum_total(name)} AS {name}" for name, _, _ in moments]
                       + [f"sum(c_{name})::BIGINT AS {name}" for name in counts if name != "sample_size"]
                       + ["coalesce(sum(c_sample_size) FILTER (NOT base), 0)::BIGINT AS n_not_base"])
    con.execute(f"CREATE TEMP TABLE ratio AS {_by_scope_of_cells_sql(cells, totals, ratio)}")
    con.execute("""CREATE TEMP VIEW ratio_se AS
        SELECT * EXCLUDE (s_num, s_den, s_num2, s_den2, s_num_b, s_den_b, s_nd, n_num, n_den, n_nd),
            s_num AS numerator, s_den AS denominator, s_num / nullif(s_den, 0) AS value,
            CASE WHEN n_num > 1 THEN (s_num2 - s_num * s_num / n_num) / (n_num - 1) END AS v_num,
            CASE WHEN n_den > 1 THEN (s_den2 - s_den * s_den / n_den) / (n_den - 1) END AS v_den,
            CASE WHEN n_nd > 1 THEN (s_nd - s_num_b * s_den_b / n_nd) / (n_nd - 1) END AS c_nd,
            s_den / nullif(n_den, 0) AS m_den
        FROM ratio""")
    # Quantiles are holistic (a group's every value is held until the end, and cannot spill): one metric at
    # a time, so a 10 M-event day stays within the memory limit (all at once ran out of 1 GB).
    parts = [(q, m.name) for q, agg in ((0.5, "p50"), (0.95, "p95")) for m in METRICS if m.agg == agg]
    for i, (q, name) in enumerate(parts):
        by_scope = _by_scope_sql("NULL::DOUBLE AS numerator, NULL::DOUBLE AS denominator, quantile_cont(num, $q) "
                                 "AS value, count(*) AS sample_size, NULL::DOUBLE AS std_error", [name])
        con.execute(f"{'CREATE TEMP TABLE quant AS' if i == 0 else 'INSERT INTO quant'} {by_scope}", {"q": q})
    con.execute("""CREATE TEMP TABLE cur0 AS
        SELECT r.metric, metric_date, dimension, dimension_value, numerator, denominator, value, sample_size,
            CASE WHEN sample_size > 1 AND m_den > 0 THEN
                sqrt(greatest(v_num + value * value * v_den - 2 * value * c_nd, 0) / sample_size) / m_den END
                AS std_error
        FROM ratio_se r
        UNION ALL
        SELECT * FROM quant""")
    con.execute(sql("cur.sql"), {"day": str(p.day)})
    n_units = con.execute("SELECT (SELECT sum(sample_size) FROM cur0 WHERE dimension = 'all') "
                          "+ (SELECT sum(n_not_base) FROM ratio)").fetchall()[0][0]
    con.execute("DROP VIEW ratio_se; DROP TABLE ratio; DROP TABLE cur0; DROP TABLE quant")
    return int(n_units or 0)


_PREV_COLS = ("metric, metric_date, dimension, dimension_value, numerator, denominator, value, sample_size, "
              "std_error, is_final")


def _baseline(con, lake: Lake, settings: Settings, p: Plan) -> None:
    """`metrics`: `cur` with its trailing baseline, the change, its noise and the pooled level window.

    History comes from the earlier partitions of this mart (the latest value of each metric_date) and
    only final values enter a baseline (sql/known.sql, baseline.sql, level.sql, metrics.sql)."""
    first = p.d(p.baseline_days + p.max_lag + settings.signals_level_window_days + 1)
    files = lake.files_between("marts", METRICS_MART, first, p.d(1))
    history = (f"SELECT {_PREV_COLS} FROM read_parquet({literal_list(files)}, hive_partitioning=true, union_by_name=true) "
               f"QUALIFY row_number() OVER (PARTITION BY {_KEY} ORDER BY dt DESC) = 1") if files else \
        f"SELECT {_PREV_COLS} FROM cur WHERE false"
    con.execute(sql("known.sql", history=history))
    con.execute(sql("baseline.sql"), {"baseline_days": p.baseline_days})
    con.execute(sql("level.sql"), {"level_days": int(settings.signals_level_window_days)})
    con.execute(sql("metrics.sql"), {"noise_z": float(settings.signals_noise_z),
                                     "min_baseline_days": int(settings.signals_min_baseline_days)})


def _action_queue(con, lake: Lake, settings: Settings, p: Plan) -> None:
    """`queue`: the current, final values that crossed a level or moved beyond noise in the bad direction,
    one row per problem at the scope that explains it (sql/queue_*.sql: the drill-down is explained there)."""
    z = float(settings.signals_noise_z)
    con.execute(sql("queue_raised.sql"), {"level_z": float(settings.signals_level_z),
                                          "min_sample": int(settings.signals_min_sample)})
    con.execute(sql("queue_scoped.sql"), {"noise_z": z})
    con.execute(sql("queue_kept.sql"))
    scope = " OR ".join(
        [f"(k.dimension = '{d}' AND u.base AND u.{d} = k.dimension_value)" for d in DIMENSIONS]
        + ["(k.dimension = 'all' AND u.base)", "(u.extra_dim = k.dimension AND u.extra_value = k.dimension_value)"])
    raised_metrics = [r[0] for r in con.execute("SELECT DISTINCT metric FROM kept ORDER BY 1").fetchall()]
    only_raised = f"u.metric IN ({_names(raised_metrics)})" if raised_metrics else "false"
    con.execute(sql("queue_examples.sql", scope=scope, only_raised=only_raised))
    prev = lake.partition_file("marts", QUEUE_MART, p.d(1))
    previous = (f"SELECT action_id, first_raised_date FROM read_parquet({literal(prev)})"
                if lake.has_partition("marts", QUEUE_MART, p.d(1))
                else "SELECT NULL::VARCHAR AS action_id, NULL::DATE AS first_raised_date WHERE false")
    con.execute(sql("queue.sql", previous=previous), {"day": p.d(0)})


def _ab_tests(con, settings: Settings, p: Plan) -> int:
    """`ab`: each strategy against the control on resolution, reopens and CSAT, live traffic only.

    Day metrics pool the last signals_ab_window_days days; windowed metrics pool the same number of
    cohorts that are final. Proportions: pooled two-proportion z-test; CSAT mean: Mann-Whitney U.
    """
    from feedback_loop.signals.abtest import mann_whitney, n_per_arm, two_proportion_z

    first = p.d(p.ab_days - 1)
    con.execute(f"CREATE TEMP TABLE units_ab AS SELECT * FROM ({units_sql(con, settings, p, first, p.d(0), 'ab', AB_METRICS)}) "
                "WHERE base AND mode = 'live'")
    rows = con.execute("""SELECT metric, strategy, count(*), sum(num), sum(den), min(metric_date), max(metric_date),
            CASE WHEN metric = 'csat_mean' THEN list(num ORDER BY num) END
        FROM units_ab GROUP BY metric, strategy ORDER BY metric, strategy""").fetchall()
    traffic = con.execute("""SELECT d_strategy, count(*) FROM conv_dims
        WHERE first_fact_date BETWEEN $first::DATE AND $last::DATE AND d_mode = 'live'
        GROUP BY 1 ORDER BY 2 DESC, 1""", {"first": first, "last": p.d(0)}).fetchall()
    control = settings.signals_ab_control or (traffic[0][0] if traffic else None)
    alpha = float(settings.signals_ab_alpha)
    con.execute("""CREATE TEMP TABLE ab (metric VARCHAR, test VARCHAR, control VARCHAR, treatment VARCHAR,
        cohort_first DATE, cohort_last DATE, n_control BIGINT, n_treatment BIGINT, value_control DOUBLE,
        value_treatment DOUBLE, diff DOUBLE, diff_rel DOUBLE, statistic DOUBLE, p_value DOUBLE, alpha DOUBLE,
        significant BOOLEAN, better VARCHAR, n_required_per_arm BIGINT, higher_is_better BOOLEAN)""")
    by = {}
    for metric, strategy, n, s_num, s_den, lo, hi, scores in rows:
        by.setdefault(metric, {})[strategy] = (n, s_num, s_den, lo, hi, scores)
    out = []
    for metric in AB_METRICS:
        arms = by.get(metric, {})
        if control not in arms:
            continue
        hib = METRIC_BY_NAME[metric].higher_is_better
        nc, xc, dc, loc, hic, sc = arms[control]
        for strategy in sorted(s for s in arms if s != control):
            nt, xt, dt_, lot, hit, st = arms[strategy]
            vc, vt = xc / dc, xt / dt_
            if metric == "csat_mean":
                test, (stat, pval), need = "mann_whitney_u", mann_whitney(st, sc), None
            else:
                test, (stat, pval) = "two_proportion_z", two_proportion_z(xt, dt_, xc, dc)
                need = n_per_arm(vt, vc, alpha)
            sig = pval is not None and pval < alpha
            better = None
            if sig and vt != vc:
                better = strategy if (vt > vc) == hib else control
            out.append((metric, test, control, strategy, min(loc, lot), max(hic, hit), nc, nt, round(vc, 10),
                        round(vt, 10), round(vt - vc, 10), round((vt - vc) / vc, 10) if vc else None,
                        None if stat is None else round(stat, 8), None if pval is None else round(pval, 10),
                        alpha, sig, better, need, hib))
    if out:
        con.executemany("INSERT INTO ab VALUES (" + ", ".join(["?"] * 19) + ")", out)
    return len(out)


# ----------------------------------------------------------------------------------------------- views

def _latest_view_sql(lake: Lake) -> str:
    return (f"SELECT * FROM read_parquet({literal(lake.glob('marts', METRICS_MART))}, hive_partitioning=true, "
            f"union_by_name=true) QUALIFY row_number() OVER (PARTITION BY {_KEY} ORDER BY dt DESC) = 1")


def register_signal_views(con, settings: Settings) -> list[str]:
    """`signal_metrics_latest`: the latest value of every (metric_date, metric, scope), final or not."""
    lake = Lake(settings.lake)
    if not lake.days("marts", METRICS_MART):
        return []
    con.execute(f"CREATE OR REPLACE VIEW signal_metrics_latest AS {_latest_view_sql(lake)}")
    return ["signal_metrics_latest"]


def dumps(doc: dict) -> str:
    return json.dumps(doc, indent=2, default=str)
