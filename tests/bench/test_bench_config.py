"""The benchmark's own checks, untimed and without nginx: its config is valid, its gate is strict."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from strangler.config import loader

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def _load_run_module():
    # bench/ is a folder of scripts, not a package: import run.py the way `python bench/run.py` does.
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    spec = importlib.util.spec_from_file_location("bench_run", BENCH_DIR / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module      # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


run = _load_run_module()
ORIGIN = {
    "GET /small": run.Answer.of(200, b'{"items":[]}'),
    "GET /large": run.Answer.of(200, b"\x00" * 4096),
    "POST /upload": run.Answer.of(200, b'{"received":true}\n'),
}


def test_bench_config_is_valid():
    """bench/strangler.yaml loads without problems, as `strangler check` would report them."""
    config = loader.load_config(BENCH_DIR / "strangler.yaml")
    assert len(config.routes) >= 5


def test_bench_config_pointed_at_the_origin_is_still_valid():
    """The copy run.py writes, with the origin's real port, loads too and names that port."""
    text = run.config_for_origin((BENCH_DIR / "strangler.yaml").read_text(), 43210)
    config = loader.parse_config(text, "bench.yaml")
    assert {upstream.url for upstream in config.upstreams} == {"http://127.0.0.1:43210"}


def test_hot_route_splits_fifty_fifty_with_sticky_cohort_and_a_fallback():
    """The route S1 and S2 hit is a 50/50 split by cohort, between two names for the one origin."""
    config = loader.load_config(BENCH_DIR / "strangler.yaml")
    hot = next(route for route in config.routes if route.match.path == "/small")
    assert sorted(percent for _, percent in hot.split) == [50, 50]
    assert hot.sticky.kind == "cohort"
    assert hot.fallback is not None
    urls = {config.upstream(name).url for name in hot.upstream_names}
    assert len(urls) == 1


def test_every_benchmarked_path_is_routed_by_a_split_route():
    """/small, /large and POST /upload each reach a route that splits between two upstreams."""
    config = loader.load_config(BENCH_DIR / "strangler.yaml")
    for path in ("/small", "/large", "/upload"):
        route = next(r for r in config.routes if r.match.path == path)
        assert len(route.split) == 2, path


def test_gate_accepts_answers_equal_to_the_origins():
    """Equal status and body on every probe, repeated: nothing to report."""
    got = {probe: [answer] * 4 for probe, answer in ORIGIN.items()}
    assert run.check_answers(ORIGIN, got) == []


def test_gate_rejects_a_differing_body():
    """One repeat with a different body is enough to keep a contender out of the timing."""
    got = {probe: [answer] * 4 for probe, answer in ORIGIN.items()}
    got["GET /large"] = [ORIGIN["GET /large"], run.Answer.of(200, b"\x00" * 4095 + b"\x01")]
    problems = run.check_answers(ORIGIN, got)
    assert len(problems) == 1 and problems[0].startswith("GET /large:")


def test_gate_rejects_a_differing_status_and_a_missing_probe():
    """A proxy's own 502 with the origin's body length, or no answer at all, fails the gate."""
    got = {"GET /small": [run.Answer(502, ORIGIN["GET /small"].length, ORIGIN["GET /small"].sha256)],
           "GET /large": [ORIGIN["GET /large"]]}
    problems = run.check_answers(ORIGIN, got)
    assert [p.split(":")[0] for p in problems] == ["GET /small", "POST /upload"]


def test_wrk_report_line_is_parsed_into_rates_and_percentiles():
    """The Lua done() line becomes requests/s, MiB/s and p50/p99 in milliseconds."""
    line = ("BENCH requests=20000 duration_us=2000000 bytes=20971520 connect_errors=0 read_errors=1 "
            "write_errors=0 status_errors=2 timeouts=0 p50_us=1500 p90_us=3000 p99_us=7250 max_us=9000")
    result = run.harness.parse_wrk("Running 2s test\n" + line + "\n")
    assert result.requests_per_s == 10000
    assert result.mib_per_s == 10
    assert (result.p50_ms, result.p99_ms, result.errors) == (1.5, 7.25, 3)


def test_upload_probe_body_matches_the_wrk_post_body():
    """The correctness probe and the timed POST send the same 64 KiB."""
    script = run.harness.post_script()
    assert len(run.harness.UPLOAD_BODY) == 64 * 1024
    assert f"string.rep(table.concat(parts), {64 * 1024 // 256})" in script


def test_the_composite_route_of_s5_has_its_parts_on_the_origin_after_the_other_routes():
    """S5's route composes the parts the gate checks, each from the origin's /small; S1-S4's requests
    never walk past it (it comes after their routes)."""
    config = loader.load_config(BENCH_DIR / "strangler.yaml")
    names = [route.name for route in config.routes]
    composite = next(route for route in config.routes if route.compose)
    assert composite.match.template.match(run.COMPOSITE_PATH) is not None
    assert tuple(part.name for part in composite.compose) == run.COMPOSITE_PARTS
    assert all(part.target.fill({"id": "7"}).startswith("/small?") for part in composite.compose)
    served = [names.index(next(r.name for r in config.routes if r.match.path == path))
              for path in ("/small", "/large", "/upload")]
    assert names.index(composite.name) > max(served)


def test_s6_copies_a_tenth_of_s1s_requests_to_a_second_origin():
    """S6's route is S1's with `shadow: {percent: 10}`, its shadow upstream at the second origin's port."""
    config = loader.parse_config(run.config_for_origin((BENCH_DIR / "strangler.yaml").read_text(), 43210, 43211))
    s1 = next(route for route in config.routes if route.match.path == "/small")
    s6 = next(route for route in config.routes if route.match.path == "/shadowed")
    assert (s6.split, s6.sticky, s6.fallback, s6.timeout_s) == (s1.split, s1.sticky, s1.fallback, s1.timeout_s)
    assert s6.shadow is not None and s6.shadow.percent == 10
    assert config.upstream(s6.shadow.upstream).url == "http://127.0.0.1:43211"
    assert {config.upstream(name).url for name in s6.upstream_names} == {"http://127.0.0.1:43210"}


def test_s6_is_measured_in_turns_with_s1():
    """Round by round, S1 then S6, so that the machine's drift hits both alike; other scenarios as they come."""
    order = [[scenario.key for scenario in group] for group in run._measuring_order(["S1", "S2", "S4", "S5", "S6"])]
    assert order == [["S2"], ["S4"], ["S5"], ["S1", "S6"]]
    assert [[s.key for s in group] for group in run._measuring_order(["S1", "S2"])] == [["S1"], ["S2"]]


def test_two_instances_behind_haproxy_need_a_third_cpu_and_say_so_on_two(monkeypatch):
    """Each instance on a CPU of its own besides the load's: measured with 3 CPUs, reported as not measurable on 2."""
    args = run.parse_args(["--proxy-cpus", "0", "--load-cpus", "1"])
    monkeypatch.setattr(run.os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert run.instance_cpus(args) == ("0", "2")
    monkeypatch.setattr(run.os, "sched_getaffinity", lambda pid: {0, 1})
    assert run.instance_cpus(args) is None
    scaling = run.measure_instance_scaling(None, Path("."), None, 0, {}, {}, {}, args)
    text = "\n".join(run.render_instance_scaling(scaling))
    assert "not measurable on 2 CPUs" in text and "3 or more CPUs" in text
