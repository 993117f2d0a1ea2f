"""Hydra configs, importable as zoft.conf so an installed zoft-run finds them."""
