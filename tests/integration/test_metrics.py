"""Metrics through Ray's Prometheus endpoint: a SaaS alias (real ``openai`` SDK in real workers, a local
OpenAI-protocol server) answers requests, one error, an upstream 429 retried, a worker killed mid-request (the
router retries it on the replacement) and a scale-up; then the node's metrics address shows the ``byzer_like``
series with those counts, ``stat`` shows the SaaS counters, and the gateway's series count both replicas."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families

from byzer_like import Client, DeploySpec, UnsupportedError
from byzer_like.metrics import all_series
from byzer_like.pool import scale
from byzer_like.spec import BackendSpec, ResourceSpec
from tests.upstreams.openai_server import OpenAIUpstream

KEY = "sk-metrics-secret-4242"
ALIAS = "metrics_oa"
DASHBOARD = Path(__file__).resolve().parents[2] / "configs" / "grafana" / "byzer_like_dashboard.json"


def metrics_url() -> str:
    from byzer_like.cluster import status

    urls = [n["metrics_url"] for n in status()["nodes"] if n["alive"] and n["metrics_url"]]
    assert urls, "no node exports metrics"
    return urls[0]


def scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    text = httpx.get(url, timeout=10).text
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def total(samples: list, name: str, **labels: str) -> float:
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == want for k, want in labels.items()))


def wait_for(url: str, checks: dict[str, tuple[str, dict[str, str], float]], timeout_s: float = 90) -> list:
    """Scrape until every check holds (Ray's agent exports on a period); fail naming those that do not."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(url)
        wrong = {what: (total(samples, name, **labels), want) for what, (name, labels, want) in checks.items()
                 if total(samples, name, **labels) != want}
        if not wrong:
            return samples
        assert time.monotonic() < deadline, f"metrics (got, want): {wrong}"
        time.sleep(2)


@pytest.fixture(scope="module")
def upstream():
    with OpenAIUpstream(api_key=KEY) as server:
        yield server


def test_series_counts_stat_gateway_replicas_and_dashboard(deployed, upstream, cli):
    from conftest import gateway_serving

    engine = {"model": "gpt-4o", "api_key": KEY, "base_url": upstream.url + "/v1", "retry_base_s": 0.05}
    deployed(DeploySpec(alias=ALIAS, backend=BackendSpec(model_type="saas/openai", engine_kwargs=engine),
                        resources=ResourceSpec(num_workers=1)))
    client, url = Client(ALIAS, timeout=120), metrics_url()
    base = {"alias": ALIAS, "backend": "saas/openai"}
    upstream.add_fault(status=429, headers={"Retry-After": "0.25"})
    assert client.chat("one").text == "echo: one"  # retried past the 429
    for word in ("two", "three"):
        assert client.chat(word).text == f"echo: {word}"
    for word in ("four", "five"):
        assert "".join(c.text for c in client.stream(word)) == f"echo: {word}"
    with pytest.raises(UnsupportedError):
        client.chat("six", top_k=3)  # refused by the worker: an error of type UnsupportedError

    # the worker's SaaS series, read before that worker is killed below (six was refused before any upstream call)
    first = wait_for(url, {
        "upstream retry": ("ray_byzer_like_upstream_retries_total", {**base, "type": "RateLimitError"}, 1),
        "rate limited": ("ray_byzer_like_rate_limited_total", base, 1),
        "retry after": ("ray_byzer_like_retry_after_seconds", base, 0.25),
        "upstream calls": ("ray_byzer_like_upstream_seconds_count", base, 5),
    })
    saas = client.stat()["saas"]
    assert (saas["requests"], saas["retries"], saas["rate_limited"], saas["last_retry_after_s"]) == (5, 1, 1, 0.25)
    out, table = cli("stat", ALIAS, "--json"), cli("stat", ALIAS)
    assert out.returncode == 0 and json.loads(out.stdout)["deploy_phase"] == "ready", out.stderr
    assert "upstream: 5 requests, 0 errors, 1 retries, 1 rate limited (last Retry-After 0.25s)" in table.stdout
    assert "deploy ready" in table.stdout and KEY not in out.stdout + table.stdout

    # a worker killed while its request waits on the upstream: the router retries it on the replacement
    upstream.add_fault(delay_s=30)
    answers: list[str] = []
    waiting = threading.Thread(target=lambda: answers.append(client.chat("seven").text))
    before = len(upstream.received)
    waiting.start()
    deadline = time.monotonic() + 30
    while len(upstream.received) == before:
        assert time.monotonic() < deadline, "the slow request never reached the upstream"
        time.sleep(0.1)
    ray.kill(ray.get_actor(f"{ALIAS}/worker-0", namespace="byzer_like"), no_restart=True)
    waiting.join(120)
    assert answers == ["echo: seven"]
    scale(ALIAS, 2)
    deadline = time.monotonic() + 60
    while client.stat()["ready_workers"] < 2:
        assert time.monotonic() < deadline, "scale-up did not finish"
        time.sleep(0.5)

    sent = 12  # through two gateway replicas
    gateway = {"route": "/v1/chat/completions", "status": "200"}
    gw_before = total(scrape(url), "ray_byzer_like_gateway_requests_total", **gateway)
    with gateway_serving("--replicas", "2") as gw, httpx.Client(timeout=60) as http:
        for i in range(sent):
            resp = http.post(f"{gw}/v1/chat/completions",
                             json={"model": ALIAS, "messages": [{"role": "user", "content": f"n{i}"}]})
            assert resp.status_code == 200, resp.text
        samples = wait_for(url, {
            "ok": ("ray_byzer_like_requests_total", {**base, "outcome": "ok"}, 6 + sent),
            "error": ("ray_byzer_like_requests_total", {**base, "outcome": "error"}, 1),
            "error type": ("ray_byzer_like_errors_total", {**base, "type": "UnsupportedError"}, 1),
            "router retry": ("ray_byzer_like_request_retries_total", base, 1),
            "restart": ("ray_byzer_like_worker_restarts_total", base, 1),
            "scale up": ("ray_byzer_like_scaling_events_total", {**base, "direction": "up"}, 1),
            "ready workers": ("ray_byzer_like_workers", {**base, "phase": "ready"}, 2),
            "latencies": ("ray_byzer_like_request_seconds_count", base, 6 + sent),
            "first tokens": ("ray_byzer_like_time_to_first_token_seconds_count", base, 2),
            "queue times": ("ray_byzer_like_queue_seconds_count", base, 7 + sent),
            "queue": ("ray_byzer_like_queue_length", base, 0),
            "gateway, both replicas": ("ray_byzer_like_gateway_requests_total", gateway, gw_before + sent),
        })
    assert total(samples, "ray_byzer_like_completion_tokens_total", **base) > 0
    assert total(samples, "ray_byzer_like_gateway_request_seconds_count", route="/v1/chat/completions") >= sent
    labels: set[str] = set()
    for name, lab, _ in samples:
        if name.startswith("ray_byzer_like"):
            labels.update(lab)
            assert KEY not in json.dumps(lab) and upstream.url not in json.dumps(lab)
    assert {"alias", "backend", "worker", "adapter", "outcome"} <= labels

    # the dashboard's queries name only series we export, and every one of them exists at the endpoint now
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    named = {m for e in exprs for m in re.findall(r"ray_byzer_like_[a-z_]+", e)}
    assert named and named <= set(all_series()), named - set(all_series())
    seen = {n for n, _, _ in first + samples}
    assert named <= seen, named - seen

    status = cli("cluster", "status")
    assert status.returncode == 0 and re.search(r"metrics: +http://[\d.]+:\d+/metrics", status.stdout)
