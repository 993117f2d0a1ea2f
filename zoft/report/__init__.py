"""Run directories read into pandas, selected the papers' way and rendered as tables and plots
(no torch import anywhere here)."""
