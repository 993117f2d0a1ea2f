"""Scorers: a model and a task turned into losses, candidate scores and predictions."""
