"""Telemetry backends: logging's extras, OpenTelemetry and Prometheus.

They subscribe to the library's events from above (``smoothapi.add_hook``)
and read the live breakers when collected; the core never imports them.
``import smoothapi.otel`` and ``import smoothapi.prometheus`` are the
documented paths of :mod:`.otel` and :mod:`.prometheus`.
"""
