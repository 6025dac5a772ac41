"""deploy/prometheus/strangler-rules.yml, checked and unit-tested by promtool (Debian's `prometheus` package).

Each alert has a test file under deploy/prometheus/tests/ in which it fires on
failing series and stays silent on healthy ones; promtool runs them as written.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.servers import REPO

RULES = REPO / "deploy" / "prometheus" / "strangler-rules.yml"
TESTS = sorted((REPO / "deploy" / "prometheus" / "tests").glob("*.test.yml"))


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("`promtool` is not on PATH (Debian: apt-get install prometheus; .ci/run does)")
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=RULES.parent)


def alerts() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    rules = sum(len(group["rules"]) for group in yaml.safe_load(RULES.read_text())["groups"])
    assert f"SUCCESS: {rules} rules found" in done.stdout


@pytest.mark.parametrize("test_file", TESTS, ids=[path.name for path in TESTS])
def test_promtool_runs_the_alerts_unit_tests(test_file: Path) -> None:
    done = promtool("test", "rules", test_file)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_test_that_fires_it_and_one_that_stays_silent() -> None:
    fired: dict[str, int] = {}
    silent: dict[str, int] = {}
    for path in TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case["alert_rule_test"]:
                counts = fired if check.get("exp_alerts") else silent
                counts[check["alertname"]] = counts.get(check["alertname"], 0) + 1
    names = {rule["alert"] for rule in alerts()}
    assert names == {"StranglerNewUpstreamErrorsAboveLegacy", "StranglerCircuitBreakerOpen", "StranglerConfigReloadFailed",
                     "StranglerShadowMatchLow", "StranglerRampRolledBack", "StranglerRollbackAllActive"}
    assert set(fired) == names and set(silent) == names
    assert len(TESTS) == len(names)


def test_every_alert_has_a_summary_that_names_its_route() -> None:
    for rule in alerts():
        summary = rule["annotations"]["summary"]
        # Alerts about one route name it; the others speak of every route.
        assert "{{ $labels.route }}" in summary or "Every route" in summary, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")
