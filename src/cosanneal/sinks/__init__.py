"""Telemetry sinks beyond the run store: TensorBoard, MLflow, Prometheus, Weights & Biases."""
