"""devicesim: a SimPy discrete-event simulator of LoRaWAN devices, radio channel,
gateways and network server, producing exactly what the application receives."""
