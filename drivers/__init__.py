"""Drivers for real crossbar hardware (serial and VISA transports)."""

__all__: list[str] = []
