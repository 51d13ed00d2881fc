"""The service's parts start and stop with its application (cleanup contexts)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from collector.service.app import start_service
from collector.service.config import ServiceConfig


def test_a_start_that_fails_half_way_closes_the_store_it_had_opened(tmp_path):
    # the device file is read after the store is open: the failed start must undo that
    devices = tmp_path / "devices.txt"
    devices.write_text("70B3D57ED005A1B2\n")
    db = tmp_path / "c.db"
    cfg = ServiceConfig(db=str(db), host="127.0.0.1", port=0, ingest_token=["t"], clock="manual",
                        clock_start=1_800_000_000.0, devices_file=str(devices))

    async def start() -> None:
        with pytest.raises(RuntimeError, match="devices_file: .*use a .toml or .csv file"):
            await start_service(cfg)

    asyncio.run(start())
    assert db.exists()
    # SQLite removes the write-ahead log when its last connection closes
    assert not Path(f"{db}-wal").exists()
