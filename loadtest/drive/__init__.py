"""Driving load: the request protocol, the one request loop, open loop, Locust users and shapes, the runner."""
