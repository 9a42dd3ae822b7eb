"""The monitoring assets in contrib/: Prometheus alert rules, their unit tests, the dashboard.

promtool (Debian package `prometheus`) checks the rules and runs their unit tests; without
it those tests are skipped, but fail when the environment variable `CI` is set (CI installs
it). The rest needs no tool: every metric an alert or a panel queries must be one the
daemon exports (`reka_sync.metrics.METRIC_NAMES`, histograms through their `_bucket`,
`_sum` and `_count` series), counters are only read through rate()/increase() (a restart
resets them), and the label values used are ones the daemon has.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from reka_sync.lifecycle import State
from reka_sync.metrics import METRIC_NAMES, METRICS
from reka_sync.outcomes import Kind

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "contrib" / "prometheus" / "reka-sync-alerts.yml"
RULE_TESTS = REPO / "contrib" / "prometheus" / "reka-sync-alerts.test.yml"
DASHBOARD = REPO / "contrib" / "grafana" / "reka-sync-dashboard.json"

HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
# Series that are not reka-sync's own but may be queried: Prometheus' scrape health.
STANDARD_SERIES = {"up"}
PROMQL_WORDS = {"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring"}
PROMQL_WORDS |= {"group_left", "group_right", "inf", "nan", "Inf", "NaN"}
GRAFANA_VARIABLES = {"__rate_interval", "__interval", "__range", "__interval_ms"}
LABEL_VALUES = {
    "state": {s.value for s in State},
    "error_class": {k.value for k in Kind if k is not Kind.LOST},
}
# What the dashboard must show (the brief of contrib/grafana), by the series it reads.
DASHBOARD_MUST_READ = {
    "reka_sync_files",
    "reka_sync_oldest_queued_age_seconds",
    "reka_sync_uploaded_bytes_total",
    "reka_sync_uploads_succeeded_total",
    "reka_sync_uploads_failed_total",
    "reka_sync_upload_duration_seconds_bucket",
    "reka_sync_rate_limit_pauses_total",
    "reka_sync_paused",
    "reka_sync_upload_max_rate_bytes_per_second",
    "reka_sync_upload_workers_allowed",
    "reka_sync_roots_unavailable",
    "reka_sync_inotify_watches",
    "reka_sync_inotify_watches_limit",
    "reka_sync_journal_size_bytes",
}

REKA_NAME = re.compile(r"\b(reka_sync_[A-Za-z0-9_]*)(?=[{\[\s),]|\b|$)")


def allowed_series() -> set[str]:
    """Return every series name the daemon exports."""
    names: set[str] = set()
    for name, (kind, _help) in METRICS.items():
        if kind == "histogram":
            names.update(name + suffix for suffix in HISTOGRAM_SERIES)
        else:
            names.add(name)
    return names


def reka_names(expr: str) -> set[str]:
    """Given PromQL, return the reka_sync_* identifiers it names."""
    return set(REKA_NAME.findall(expr))


def bare_metric_names(expr: str) -> set[str]:
    """Given PromQL, return every metric name it selects, reka-sync's or not: identifiers
    left once strings, label matchers, ranges, grouping clauses, function calls and
    keywords are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    found = re.findall(r"(?<![\w:.$])([A-Za-z_:][\w:]*)\b(?!\s*\()", text)
    return {name for name in found if name not in PROMQL_WORDS}


def used_label_values(expr: str) -> dict[str, set[str]]:
    """Given PromQL, return the values its `label="..."` / `label=~"a|b"` matchers name, for
    the labels whose values the daemon fixes."""
    values: dict[str, set[str]] = {}
    for label, value in re.findall(r'\b(\w+)\s*=~?\s*"([^"]*)"', expr):
        if label in LABEL_VALUES:
            values.setdefault(label, set()).update(value.split("|"))
    return values


# -- reading the rule files without a YAML library ------------------------------------------


def _scalar(lines: list[str], at: int, rest: str) -> tuple[str, int]:
    """Given the lines, the index of a `key: rest` line and rest, return the value (a plain,
    quoted, literal `|` or folded `>` scalar) and the index of the line after it."""
    if rest[:1] not in ("|", ">"):
        return rest.strip().strip("'\""), at + 1
    indent = len(lines[at]) - len(lines[at].lstrip())
    block: list[str] = []
    end = at + 1
    while end < len(lines) and (
        not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
    ):
        block.append(lines[end].strip())
        end += 1
    joiner = "\n" if rest.startswith("|") else " "
    return joiner.join(block).strip(), end


def alert_rules() -> dict[str, dict[str, str]]:
    """Return each alert of RULES by name: its expr, severity, summary and description."""
    lines = RULES.read_text().splitlines()
    rules: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    i = 0
    while i < len(lines):
        match = re.match(r"\s*(?:- )?(alert|expr|severity|summary|description):\s*(.*)$", lines[i])
        if not match:
            i += 1
            continue
        key, rest = match.groups()
        value, i = _scalar(lines, i, rest)
        if key == "alert":
            assert value not in rules, f"alert {value} defined twice"
            current = rules[value] = {}
        else:
            assert current is not None, f"{key} before any alert"
            current[key] = value
    return rules


def rule_test_cases() -> dict[str, set[str]]:
    """Return, per alert name, the kinds of cases the promtool tests hold for it: "fires"
    (an eval_time expecting it) and "silent" (an eval_time expecting none)."""
    cases: dict[str, set[str]] = {}
    lines = [line.strip() for line in RULE_TESTS.read_text().splitlines() if line.strip()]
    for i, line in enumerate(lines[:-1]):
        if line.startswith("alertname:"):
            name = line.split(":", 1)[1].strip()
            expected = lines[i + 1].replace(" ", "")
            assert expected.startswith("exp_alerts:"), f"{name}: {expected}"
            kind = "silent" if expected == "exp_alerts:[]" else "fires"
            cases.setdefault(name, set()).add(kind)
    return cases


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Return every panel that shows data, those inside collapsed rows included."""
    found: list[dict[str, Any]] = []
    for panel in board["panels"]:
        if panel.get("type") == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def dashboard_exprs(board: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (where, PromQL) for every panel target and every query variable."""
    exprs = [
        (f"panel {p.get('title')!r} target {t.get('refId')}", t.get("expr", ""))
        for p in panels(board)
        for t in p.get("targets", [])
    ]
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]
            text = query["query"] if isinstance(query, dict) else query
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", text)
            exprs.append((f"variable {var['name']}", inner.group(1) if inner else text))
    return exprs


def all_exprs() -> list[tuple[str, str]]:
    rules = [(f"alert {name}", rule["expr"]) for name, rule in alert_rules().items()]
    return rules + dashboard_exprs(dashboard())


# -- promtool ---------------------------------------------------------------------------


def promtool() -> str:
    """Return promtool's path; skip the test without it, or fail under CI."""
    found = shutil.which("promtool")
    if found:
        return found
    why = "promtool not installed (apt-get install -y --no-install-recommends prometheus)"
    if os.environ.get("CI"):
        pytest.fail(f"CI must have promtool; {why}")
    pytest.skip(why)


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_accepts_the_alert_rules() -> None:
    done = run(promtool(), "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout, done.stdout


def test_the_alert_rules_pass_their_promtool_unit_tests() -> None:
    done = run(promtool(), "test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout, done.stdout


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each panel's PromQL, with Grafana's variables filled in, as a recording rule."""
    tool = promtool()
    filled = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "instance": ".+"}
    rules = []
    for i, (_where, expr) in enumerate(dashboard_exprs(dashboard())):
        text = re.sub(r"\$\{?(\w+)\}?", lambda m: filled.get(m.group(1), m.group(0)), expr)
        rules.append({"record": f"dashboard:query_{i}", "expr": text})
    checked = tmp_path / "dashboard-queries.yml"  # JSON is YAML
    checked.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = run(tool, "check", "rules", str(checked))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout, done.stdout


# -- the alert rules --------------------------------------------------------------------

EXPECTED_ALERTS = {
    "RekaSyncBacklogNotDraining",
    "RekaSyncUploadsFailing",
    "RekaSyncPausedTooLong",
    "RekaSyncRootUnavailable",
    "RekaSyncInotifyWatchesNearLimit",
    "RekaSyncApiUnreachable",
    "RekaSyncExporterDown",
}


def test_every_alert_is_there_with_severity_and_what_to_do() -> None:
    rules = alert_rules()
    assert set(rules) == EXPECTED_ALERTS
    commands = ("reka-sync status", "reka-sync doctor", "journalctl -u reka-sync", "sysctl")
    for name, rule in rules.items():
        assert rule.get("severity") in ("warning", "critical"), name
        assert rule.get("summary"), f"{name} has no summary"
        description = rule.get("description", "")
        assert any(c in description for c in commands), f"{name}: no command to run"
    assert "sudo -u reka-sync reka-sync resume" in rules["RekaSyncPausedTooLong"]["description"]
    assert "fs.inotify.max_user_watches" in rules["RekaSyncInotifyWatchesNearLimit"]["description"]


def test_every_alert_has_a_unit_test_that_fires_and_one_that_stays_silent() -> None:
    cases = rule_test_cases()
    for name in alert_rules():
        assert cases.get(name) == {"fires", "silent"}, f"{name}: {cases.get(name)}"


def test_the_backlog_alert_spares_an_operator_pause() -> None:
    expr = alert_rules()["RekaSyncBacklogNotDraining"]["expr"]
    assert "reka_sync_paused" in expr
    assert used_label_values(expr)["state"] == {"queued", "retry_wait"}


# -- what every query names -------------------------------------------------------------


def test_the_extractors_find_what_a_query_names() -> None:
    expr = (
        'sum by (state) (rate(reka_sync_x_total{state=~"a b|c"}[5m])) > up offset 1h '
        'unless on (job) histogram_quantile(0.5, reka_sync_h_bucket{job="reka-sync"})'
    )
    assert reka_names(expr) == {"reka_sync_x_total", "reka_sync_h_bucket"}
    assert bare_metric_names(expr) == {"reka_sync_x_total", "up", "reka_sync_h_bucket"}
    assert used_label_values(expr) == {"state": {"a b", "c"}}


@pytest.mark.parametrize(("where", "expr"), all_exprs(), ids=lambda v: str(v)[:60])
def test_every_query_names_only_series_the_daemon_exports(where: str, expr: str) -> None:
    assert expr.strip(), f"{where}: empty expression"
    allowed = allowed_series()
    assert set(METRIC_NAMES) == set(METRICS)
    named = reka_names(expr)
    assert named <= allowed, f"{where}: not exported: {sorted(named - allowed)}"
    bare = bare_metric_names(expr)
    assert bare, f"{where}: names no series"
    unknown = bare - allowed - STANDARD_SERIES
    assert not unknown, f"{where}: unknown series {sorted(unknown)}"
    for label, values in used_label_values(expr).items():
        assert values <= LABEL_VALUES[label], f"{where}: {label} {values - LABEL_VALUES[label]}"


@pytest.mark.parametrize(("where", "expr"), all_exprs(), ids=lambda v: str(v)[:60])
def test_counters_are_read_through_rate_or_increase(where: str, expr: str) -> None:
    counters = [name for name, (kind, _help) in METRICS.items() if kind == "counter"]
    for name in counters:
        for match in re.finditer(rf"\b{name}\b", expr):
            before = expr[: match.start()].rstrip()
            assert before.endswith(("rate(", "increase(")), f"{where}: raw counter {name}"


# -- the dashboard ----------------------------------------------------------------------


def test_the_dashboard_loads_and_every_panel_has_a_title_and_a_query() -> None:
    board = dashboard()
    assert board["title"]
    assert isinstance(board["schemaVersion"], int)
    assert board["schemaVersion"] >= 36
    shown = panels(board)
    assert shown
    ids = [p["id"] for p in shown]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in shown:
        assert str(panel.get("title", "")).strip(), f"panel {panel.get('id')} has no title"
        targets = panel.get("targets", [])
        assert targets, f"panel {panel['title']!r} has no target"
        assert all(str(t.get("expr", "")).strip() for t in targets), panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel.get("gridPos", {})), panel["title"]


def test_the_dashboard_datasource_and_variables_resolve_on_import() -> None:
    """Every datasource is a datasource variable or an import input, every $variable in a
    query is defined: the JSON imports into any Grafana with a Prometheus datasource."""
    board = dashboard()
    variables = {v["name"]: v for v in board.get("templating", {}).get("list", [])}
    inputs = {i["name"] for i in board.get("__inputs", []) if i.get("pluginId") == "prometheus"}
    sources = {v for v, d in variables.items() if d["type"] == "datasource"}
    assert all(variables[v]["query"] == "prometheus" for v in sources)
    holders = [*panels(board), *[t for p in panels(board) for t in p["targets"]]]
    holders += [v for v in variables.values() if v["type"] == "query"]
    for holder in holders:
        source = holder.get("datasource")
        assert isinstance(source, dict), f"no datasource: {holder.get('title', holder)}"
        uid = re.fullmatch(r"\$\{(\w+)\}", str(source.get("uid", "")))
        assert uid, f"a fixed datasource uid does not import: {source}"
        assert uid.group(1) in sources | inputs, source
    for where, expr in dashboard_exprs(board):
        for name in re.findall(r"\$\{?(\w+)", expr):
            assert name in variables or name in GRAFANA_VARIABLES, f"{where}: ${name}"


def test_the_dashboard_shows_what_the_operator_needs() -> None:
    read = set().union(*(reka_names(expr) for _where, expr in dashboard_exprs(dashboard())))
    assert read >= DASHBOARD_MUST_READ, sorted(DASHBOARD_MUST_READ - read)
    quantiles = " ".join(expr for _where, expr in dashboard_exprs(dashboard()))
    assert "histogram_quantile(0.5," in quantiles
    assert "histogram_quantile(0.95," in quantiles
