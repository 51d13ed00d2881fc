"""The collector's durable store (split into modules in the next commit)."""

from collector.service.store.queries import *  # noqa: F403
