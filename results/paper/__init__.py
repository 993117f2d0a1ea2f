"""The papers' published numbers, importable as zoft.paper so an installed zoft-table finds them
(results/paper/ in the repository is their one copy; packaging ships it)."""
