"""Tests of the Python clients, against real servers on loopback."""
