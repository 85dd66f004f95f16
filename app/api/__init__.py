"""REST API v1: one router per resource (DESIGN.md)."""

from . import health, jobs, lookup, memories, patterns, recall

__all__ = ["health", "jobs", "lookup", "memories", "patterns", "recall"]
