"""Prometheus signals: the one definition of every series distil records from Triton's metrics."""
