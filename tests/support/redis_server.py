"""The cluster tests' redis-server (`scripts/redis_server.py`, shared with the cluster scripts)."""

from scripts.redis_server import RedisServer

__all__ = ["RedisServer"]
