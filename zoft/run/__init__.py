"""The run stage: checks, run identity, the training loop and everything a run writes."""
