"""Reading a run: capacity and the knee, HPA thresholds, the report."""
