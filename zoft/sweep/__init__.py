"""Grid sweeps: cell expansion and the Hydra sweeper that skips finished cells."""
