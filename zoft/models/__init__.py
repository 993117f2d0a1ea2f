"""Loading models (hub, packaged, tiny random ones) and adding adapters."""
