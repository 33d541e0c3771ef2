"""cashback package."""
