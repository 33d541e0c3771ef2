"""Tests of the serving API (mirrors serving/)."""
