"""Customer-base models: BG/NBD purchase and churn baseline, Gamma-Gamma spend model."""
