"""REST API v1: one router per resource (DESIGN.md), and ``ROUTERS``, the one list of them."""

from . import demo, facts, health, jobs, lookup, memories, patterns, recall

__all__ = ["ROUTERS", "demo", "facts", "health", "jobs", "lookup", "memories", "patterns", "recall"]

# What create_app includes, in order (and what a 405's Allow header is computed from).
ROUTERS = [
    health.router,
    memories.router,
    patterns.router,
    recall.router,
    lookup.router,
    facts.router,
    jobs.router,
    demo.router,
]
