"""Tests of the client commands of the command line, run in-process against a live server."""
