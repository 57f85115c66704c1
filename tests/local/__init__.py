"""Tests of the local infrastructure launchers."""
