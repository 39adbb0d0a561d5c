"""/metrics in the Prometheus text format (prometheus_client), read from the engine's counters at scrape time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE  # noqa: F401
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class _Collector:
    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        s = self.engine.snapshot()
        req = CounterMetricFamily("tandem_requests", "Requests accepted, by how they ended", labels=["finish"])
        for reason, n in sorted(s["finished"].items()):
            req.add_metric([str(reason)], n)
        yield req
        yield CounterMetricFamily("tandem_requests_rejected", "Requests refused with 429 (queue full)", value=s["rejected"])
        yield CounterMetricFamily("tandem_prompt_tokens", "Prompt tokens accepted", value=s["prompt_tokens"])
        yield CounterMetricFamily("tandem_generation_tokens", "Tokens generated", value=s["generation_tokens"])
        yield CounterMetricFamily("tandem_faults", "Peer failures that ended running requests", value=s["faults"])
        yield GaugeMetricFamily("tandem_running_sequences", "Sequences in the running batch", value=s["running"])
        yield GaugeMetricFamily("tandem_queue_depth", "Requests waiting for a batch slot", value=s["waiting"])
        yield GaugeMetricFamily("tandem_tokens_per_second", "Generated tokens per second over the last 10 s",
                                value=s["tokens_per_second"])
        yield GaugeMetricFamily("tandem_healthy", "1 when generation works (engine running, peer connected)",
                                value=int(s["healthy"]))
        if s["peer"] is not None:
            yield GaugeMetricFamily("tandem_peer_up", "1 while rank 1 is connected", value=s["peer"])
        rows = CounterMetricFamily("tandem_decode_steps", "Decode steps, by rows in the batch", labels=["rows"])
        for b, n in sorted(s["decode_rows"].items()):
            rows.add_metric([str(b)], n)
        yield rows


class Registry:
    def __init__(self, engine):
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(engine))

    def render(self) -> str:
        return generate_latest(self.registry).decode()
