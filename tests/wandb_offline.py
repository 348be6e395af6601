"""Read a W&B offline run file (`run-*.wandb`) back, for tests.

wandb ships no reader for this file. It is a LevelDB-style log: a 7-byte file
header (':W&B', magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each with
a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) whose
payloads join into serialized `wandb_internal_pb2.Record` messages.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def iter_payloads(data: bytes):
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError("not a W&B run file")
    pos, parts = HEADER, []
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:
            pos += left_in_block  # zero padding to the block's end
            continue
        payload = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            yield payload
        elif kind == FIRST:
            parts = [payload]
        elif kind == MIDDLE:
            parts.append(payload)
        elif kind == LAST:
            parts.append(payload)
            yield b"".join(parts)


def read_run(run_file: Path, timeout_s: float = 30.0) -> dict[str, Any]:
    """History rows, final summary, config, run info; waits for the exit record to be flushed."""
    from wandb.proto import wandb_internal_pb2 as pb

    deadline = time.monotonic() + timeout_s
    while True:
        out: dict[str, Any] = {"history": [], "summary": {}, "config": {}, "run": None, "exited": False}
        for payload in iter_payloads(run_file.read_bytes()):
            rec = pb.Record()
            rec.ParseFromString(payload)
            kind = rec.WhichOneof("record_type")
            if kind == "history":
                out["history"].append(
                    {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
                )
            elif kind == "summary":
                for i in rec.summary.update:
                    out["summary"][i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
            elif kind == "config":
                for i in rec.config.update:
                    out["config"][i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
            elif kind == "run":
                out["run"] = {"group": rec.run.run_group, "name": rec.run.display_name, "id": rec.run.run_id}
            elif kind == "exit":
                out["exited"] = True
        if out["exited"] or time.monotonic() > deadline:
            return out
        time.sleep(0.5)


def find_run_files(root: Path) -> list[Path]:
    return sorted(root.rglob("offline-run-*/run-*.wandb"))
