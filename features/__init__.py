"""churn-risk feature pipeline: input contract, synthetic data, point-in-time features, labels.

A pure library: it imports neither ``training`` nor ``serving``.
"""
