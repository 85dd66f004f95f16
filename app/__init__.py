"""The associative memory service: FastAPI over memory_core, with durable storage."""
