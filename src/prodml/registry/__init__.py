"""MLflow tracking and Model Registry (``prodml.registry.mlflow``) and the promotion gate."""
