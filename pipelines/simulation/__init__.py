"""The simulated cashback world."""
