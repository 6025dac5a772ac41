"""Read the proxy's admin API as a test would: scrape /metrics, read breaker states from /routes."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


@dataclass(frozen=True)
class Scrape:
    """One scrape of /metrics, as parsed samples."""

    samples: tuple[Sample, ...]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called `name` (as exposed: counters end in _total) whose labels include `labels`."""
        return sum(sample.value for sample in self.matching(name, **labels))

    def matching(self, name: str, **labels: str) -> list[Sample]:
        return [sample for sample in self.samples
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())]

    def labelsets(self, name: str) -> list[dict[str, str]]:
        return [dict(sample.labels) for sample in self.samples if sample.name == name]


def scrape(admin_url: str) -> Scrape:
    response = httpx.get(admin_url + "/metrics", timeout=5)
    response.raise_for_status()
    samples = tuple(sample for family in text_string_to_metric_families(response.text) for sample in family.samples)
    return Scrape(samples)


def routes(admin_url: str) -> dict:
    response = httpx.get(admin_url + "/routes", timeout=5)
    response.raise_for_status()
    return response.json()


def breaker_state(admin_url: str, route: str, upstream: str) -> str:
    """"closed", "half_open" or "open", as GET /routes reports it (reading it may turn open into half-open)."""
    for entry in routes(admin_url)["routes"]:
        if entry["name"] == route:
            return entry["breakers"][upstream]["state"]
    raise AssertionError(f"no route {route!r} in /routes")
