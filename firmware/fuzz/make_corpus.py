"""Seed corpus for the firmware fuzz target: one valid frame stream per command, from the
Python codec (memristor_hil.protocol), so the fuzzer starts inside every parser branch.

Usage: python fuzz/make_corpus.py DIR
"""

import sys
from pathlib import Path

import numpy as np

from memristor_hil import PulseBatch, SafetyLimits
from memristor_hil.protocol import messages as wire
from memristor_hil.protocol.framing import encode_frame
from memristor_hil.protocol.messages import Op

SESSION = 0x01020304  # the session the fuzz target claims the device with
SHAPE = (8, 8)


def seeds() -> dict[str, bytes]:
    def req(seq, op, body=b""):
        return wire.encode_request(seq, op, body, SESSION)

    def batch(cells, **kw):
        b = PulseBatch.from_flat(cells, SHAPE[1], **kw)
        return wire.encode_batch(b, b.locate(SHAPE, SafetyLimits(max_pulses=10**6)), True)

    messages = {
        "identify": req(1, Op.IDENTIFY),
        "claim": req(2, Op.CLAIM, b"\x01"),
        "configure": req(3, Op.CONFIGURE, wire.encode_limits(*SHAPE, SafetyLimits(v_max=1.0))),
        "apply_list": req(4, Op.APPLY, batch([3, 3, 9], pulses=[1, 300, 70000])),
        "apply_bitmap": req(5, Op.APPLY, batch(list(range(0, 64, 2)), pulses=2)),
        "apply_volts": req(6, Op.APPLY, batch([1, 2], voltage=np.array([0.1, 0.3]))),
        "read": req(7, Op.READ, wire.encode_cells(np.array([0, 63, 5]))),
        "region": req(8, Op.READ_REGION, wire.encode_region(1, 1, 3, 4)),
        "all": req(9, Op.READ_ALL),
        "error": req(10, Op.ERROR),
        "safe": req(11, Op.SAFE),
        "reset": req(12, Op.RESET),
    }
    # version 4: a batch split into parts, all but the last flagged 0x40 ("more parts
    # follow"); then the same first part followed by a READ, the host gone mid-batch that the
    # device reports as interrupted
    b = PulseBatch.from_flat(list(range(0, 64, 3)), SHAPE[1], pulses=list(range(1, 23)))
    cells = b.locate(SHAPE, SafetyLimits(max_pulses=10**6))
    parts = wire.split_batch(b, cells, False, False, (wire.REQUEST_HEADER + 64, 6), True)
    assert len(parts) > 1 and parts[0][0] & 0x40 and not parts[-1][0] & 0x40
    for i, body in enumerate(parts):
        messages[f"apply_part{i}"] = req(13 + i, Op.APPLY, body)
    messages["read_after_part"] = req(13 + len(parts), Op.READ, wire.encode_cells(np.array([0])))
    out = {}
    for name, message in messages.items():
        out[f"frame_{name}"] = b"\x01" + encode_frame(message)  # 0x01: the stream path
        out[f"message_{name}"] = b"\x07" + message  # 0x07 % 7 == 0: the message path
    out["stream_all"] = b"\x02" + b"".join(encode_frame(m) for m in messages.values())
    return out


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in seeds().items():
        (folder / name).write_bytes(data)
    print(f"{len(seeds())} seeds in {folder}")
