"""REST API v1: one router per resource (DESIGN.md)."""

from . import demo, health, jobs, lookup, memories, patterns, recall

__all__ = ["demo", "health", "jobs", "lookup", "memories", "patterns", "recall"]
