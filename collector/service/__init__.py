"""The I/O shell around the core: HTTP ingest, the durable store, delivery, workers."""
