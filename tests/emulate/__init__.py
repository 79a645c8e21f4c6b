"""Tests of the agent emulator: its file, its agents' behaviour, its HTTP APIs and its command."""
