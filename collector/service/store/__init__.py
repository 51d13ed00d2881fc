"""The collector's durable store: one SQLite database file in WAL mode.

- :mod:`.schema`: the tables and how a connection is opened (pragmas, 0600 file);
- :mod:`.ops`: the write operations the service, the delivery agent and the CLI commit;
- :mod:`.queries`: :class:`Store`, synchronous access (one transaction per
  :meth:`Store.apply`) and the read API's queries;
- :mod:`.committer`: :class:`GroupCommitter`, concurrent writes batched into one
  transaction on a dedicated thread, each request answered only after its commit.
"""

from collector.service.store.committer import GroupCommitter, StoreUnavailable
from collector.service.store.ops import (
    AttemptResult,
    ClosedMessage,
    IngestWrite,
    Op,
    closed_message,
    message_header,
    op_attempt,
    op_closed,
    op_device,
    op_device_remove,
    op_incident,
    op_ingest,
    op_prune,
    op_retry_dead,
    together,
    uplink_text,
)
from collector.service.store.queries import Store, iso
from collector.service.store.schema import SCHEMA_VERSION, connect, create_private_file

__all__ = [
    "SCHEMA_VERSION", "AttemptResult", "ClosedMessage", "GroupCommitter", "IngestWrite", "Op", "Store",
    "StoreUnavailable", "closed_message", "connect", "create_private_file", "iso", "message_header",
    "op_attempt", "op_closed", "op_device", "op_device_remove", "op_incident", "op_ingest", "op_prune",
    "op_retry_dead", "together", "uplink_text",
]
