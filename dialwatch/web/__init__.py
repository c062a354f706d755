"""The service's HTTP side: health and readiness, Prometheus metrics, the status page."""
