"""Typed keys for what the service's parts find on the :class:`aiohttp.web.Application`.

:func:`collector.service.app.init_app` sets the configuration, the clock, the
metrics, the reassembler and the worker pool (if any) when it builds the
application; its cleanup contexts set the store, the assembler, the delivery agent,
the closing and the ingest path while the service starts, in that order, and take
them down in the reverse order.
"""

from __future__ import annotations

import asyncio
import importlib.metadata

from aiohttp import web

from collector.core.reassembly import Reassembler
from collector.service.aggregator import Assembler
from collector.service.clock import Clock
from collector.service.config import ServiceConfig
from collector.service.delivery import DeliveryAgent
from collector.service.metrics import Metrics
from collector.service.store import GroupCommitter, Store
from collector.service.workers import WorkerPool

try:
    __version__ = importlib.metadata.version("lora-collector")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

CFG = web.AppKey("cfg", ServiceConfig)
CLOCK = web.AppKey("clock", Clock)
METRICS = web.AppKey("metrics", Metrics)
REASM = web.AppKey("reasm", Reassembler)
#: set once the service shuts down: ingest answers 503, the health check "unavailable"
STOPPING = web.AppKey("stopping", asyncio.Event)
#: the bearer tokens the read API and the admin routes accept
API_TOKENS = web.AppKey("api_tokens", list)
STORE = web.AppKey("store", Store)
COMMITTER = web.AppKey("committer", GroupCommitter)
ASSEMBLER = web.AppKey("assembler", Assembler)
DELIVERY = web.AppKey("delivery", DeliveryAgent)
#: the HTTP worker processes, when there are any (:func:`collector.service.app.run_service`)
WORKERS = web.AppKey("workers", WorkerPool)
