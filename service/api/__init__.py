"""HTTP routes, one module per surface: predict, models, Open Inference Protocol, metrics."""
