"""Reproducible experiment pipelines: the embedded default model, docs/results.md and the grid.

`running` trains and evaluates (every step skipped when its output exists, so an interrupted
run continues where it stopped); `rendering` turns the recorded metrics into tables and plots.
"""
