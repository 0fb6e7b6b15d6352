"""Test doubles shared by the test suite, the sim harness and offline runs."""
