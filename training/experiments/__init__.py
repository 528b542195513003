"""Reproducible experiment pipelines: the embedded default model, docs/results.md and the grid.

`running` trains and evaluates (every step skipped when its output exists, so an interrupted
run continues where it stopped); `records` reads the recorded metrics back, `grid_tables` and
`rendering` turn them into docs/results.md's tables and plot, `model_card` into the default
model's README.md.
"""
