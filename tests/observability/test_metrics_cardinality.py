"""A scanner must not be able to grow the metrics: unknown paths and methods share one label value."""

from __future__ import annotations

import random
import string
from collections import defaultdict

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

SCANNED_PATHS = 10_000
# Methods the HTTP parser (llhttp) accepts but the service does not use; made-up tokens are
# refused by uvicorn with 400 before they reach the application.
ODD_METHODS = (
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "SEARCH",
    "PURGE",
    "REPORT",
    "MKACTIVITY",
    "CHECKOUT",
    "MERGE",
    "NOTIFY",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "LINK",
    "UNLINK",
    "ACL",
)

Series = dict[str, set[frozenset[tuple[str, str]]]]


def series_by_family(exposition: str) -> Series:
    """Label sets per metric family; a histogram's bucket bound is not a label set of its own."""
    families: Series = defaultdict(set)
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = frozenset((name, value) for name, value in sample.labels.items() if name != "le")
            families[family.name].add(labels)
    return families


def random_path(rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits + "-._~%"
    segments = ["".join(rng.choices(alphabet, k=rng.randint(1, 12))) for _ in range(rng.randint(1, 4))]
    return "/" + "/".join(segments) + rng.choice(["", "/", "?id=1", ".php", ".env"])


def scrape(client: httpx.Client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.text


@pytest.mark.slow
def test_random_paths_add_only_the_unmatched_series(start_service) -> None:
    service = start_service(env={"POOL_WORKERS": "1"})
    rng = random.Random(20240601)
    with httpx.Client(base_url=service.url, timeout=10) as client:
        # Two scrapes: the first creates the /metrics series themselves.
        scrape(client)
        baseline = series_by_family(scrape(client))
        statuses = set()
        for _ in range(SCANNED_PATHS):
            statuses.add(client.get(random_path(rng)).status_code)
        exposition = scrape(client)

    assert statuses == {404}
    after = series_by_family(exposition)
    unmatched_get = {("method", "GET"), ("route", "<unmatched>")}
    for family, label_sets in after.items():
        new = label_sets - baseline.get(family, set())
        assert len(new) <= 1, f"{family} grew by {len(new)} series: {sorted(map(sorted, new))[:5]}"
        for labels in new:
            if family == "http_problems":
                assert labels == {("status", "404"), ("type", "not-found")}
            elif family == "http_requests":
                assert labels == unmatched_get | {("status", "404")}
            else:
                assert labels == unmatched_get, f"{family}: {sorted(labels)}"
    unmatched_counts = [
        sample.value
        for metric in text_string_to_metric_families(exposition)
        if metric.name == "http_requests"
        for sample in metric.samples
        if sample.labels.get("route") == "<unmatched>"
    ]
    assert unmatched_counts == [SCANNED_PATHS]


def test_unknown_methods_share_one_label_value(start_service) -> None:
    service = start_service(env={"POOL_WORKERS": "1"})
    with httpx.Client(base_url=service.url, timeout=10) as client:
        scrape(client)
        baseline = series_by_family(scrape(client))
        for method in ODD_METHODS:
            assert client.request(method, "/payload").status_code == 405, method
        after = series_by_family(scrape(client))

    new_requests = after["http_requests"] - baseline["http_requests"]
    assert new_requests == {frozenset({("method", "OTHER"), ("route", "/payload"), ("status", "405")})}
    assert len(after["http_request_duration_seconds"] - baseline["http_request_duration_seconds"]) == 1
