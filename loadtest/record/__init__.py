"""The run record: per-step results and their JSON schema, exact percentiles, Triton /metrics, CSV."""
