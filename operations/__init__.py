"""Operating the service: structured logs, request ids and Prometheus metrics."""
