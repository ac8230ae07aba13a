"""Self-Tuning Networks: best-response layers and schedules for regularisation hyperparameters."""
