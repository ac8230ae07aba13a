"""Federated learning-rate adaptation (FedHyper) and an in-process federated simulator."""
