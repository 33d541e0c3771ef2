"""Rates: response of margin to the cashback rate, uplift learners and metrics, the policy."""
