"""Several real replicas sharing one Redis: the scale-out guarantees."""
