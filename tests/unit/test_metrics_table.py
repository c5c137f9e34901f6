"""The metrics table and the Grafana dashboard built on it (no Ray: recording is a no-op outside a Ray process)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from byzer_like.metrics import SERIES, AliasMetrics, all_series, exported_name

DASHBOARD = Path(__file__).resolve().parents[2] / "configs" / "grafana" / "byzer_like_dashboard.json"


def test_exported_names_follow_rays_prefix_and_suffixes():
    assert exported_name("requests", "counter") == ["ray_byzer_like_requests_total"]
    assert exported_name("queue_length", "gauge") == ["ray_byzer_like_queue_length"]
    assert exported_name("request_seconds", "histogram") == [
        "ray_byzer_like_request_seconds_bucket", "ray_byzer_like_request_seconds_count",
        "ray_byzer_like_request_seconds_sum"]


def test_every_dashboard_query_names_only_our_series_and_every_alias_series_has_a_panel():
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    named = {m for e in exprs for m in re.findall(r"ray_byzer_like_[a-z_]+", e)}
    assert named <= set(all_series()), named - set(all_series())
    shown = {n.removeprefix("ray_byzer_like_").removesuffix("_total").removesuffix("_bucket").removesuffix("_sum")
             .removesuffix("_count") for n in named}
    assert set(SERIES) <= shown, set(SERIES) - shown


def test_labels_are_bounded_names_never_free_text():
    for _kind, _desc, keys in SERIES.values():
        assert set(keys) <= {"worker", "adapter", "outcome", "type", "phase", "direction"}


def test_recording_outside_ray_is_a_no_op(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a process that never joined a cluster
    metrics = AliasMetrics("a", "custom/echo")
    assert not metrics.on
    metrics.request("0", "", "ok", 0.1, 0.0)
    metrics.pool(0, {"0": 1}, {"ready": 1})
