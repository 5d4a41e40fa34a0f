"""Training: estimators by name, the model pipeline, validation splits, metrics, tuning, explanations."""
