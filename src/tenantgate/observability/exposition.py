"""What ``/metrics`` exposes: the registry without the ``*_created`` samples."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector


class WithoutCreated(Collector):
    """The registry minus the ``*_created`` samples prometheus_client adds to every counter and histogram child.

    Prometheus does not ingest them by default, and in the text format each is one more series per child: they
    would nearly double the scrape. Filtering here keeps that choice per registry (the library's own switch,
    ``disable_created_metrics()``, is process-wide state).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        for metric in self._registry.collect():
            if metric.type in ("counter", "histogram"):
                metric.samples = [sample for sample in metric.samples if not sample.name.endswith("_created")]
            yield metric
