"""What a user would run instead of this service, served beside it by bench_serving.py."""
