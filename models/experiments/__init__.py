"""Experiments: definitions, assignment, and analysis (frequentist, sequential, Bayesian, power)."""
