"""Tests of agent health: the probes by engine."""
