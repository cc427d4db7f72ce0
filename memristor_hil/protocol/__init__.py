"""The crossbar wire protocol (``docs/protocol.md``): one codec for the drivers and the service.

- :mod:`.messages`: requests and replies, the transport-independent unit;
- :mod:`.framing`: binary frames with length and CRC, for serial links;
- :mod:`.scpi`: SCPI text commands and IEEE 488.2 binary blocks, for VISA.

Pure Python and NumPy: a driver imports no compiled kernels.
"""
