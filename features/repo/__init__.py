"""The Feast repo directory (feature_store.yaml and definitions.py)."""
