"""Tests of the API routes (mirrors serving/routes/)."""
