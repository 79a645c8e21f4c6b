"""Tests of the lb-service package, mirroring its layers."""
