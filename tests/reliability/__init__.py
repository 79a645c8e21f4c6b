"""Reliability: invariants under random use, fuzzing, soak, faults and restarts."""
