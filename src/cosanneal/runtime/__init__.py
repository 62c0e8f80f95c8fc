"""Runtime for training jobs: run store, telemetry, checkpoints, preemption, guards, early stopping."""
