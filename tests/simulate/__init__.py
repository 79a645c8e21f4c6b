"""Tests of the discrete-event simulator (``lb-service simulate``)."""
