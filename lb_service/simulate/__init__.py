"""Discrete-event simulation of the balancer on a virtual clock (``lb-service simulate``)."""
