"""Load testing and capacity: Locust users and shapes, result analysis, capacity to HPA thresholds."""
