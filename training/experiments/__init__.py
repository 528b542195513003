"""Reproducible experiment pipelines: the embedded default model, docs/results.md and the grid.

`running` holds the command line and the grid's pipelines, `default_model` the shipped model's,
`steps` what both run (every step skipped when its output exists, so an interrupted run
continues where it stopped); `records` reads the recorded metrics back, `grid_tables` and
`rendering` turn them into docs/results.md's tables and plot, `model_card` into the default
model's README.md.
"""
