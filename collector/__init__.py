"""lora-collector: reassembles fragmented LoRaWAN uplinks into the Web App's XML documents."""

__version__ = "0.1.0"
