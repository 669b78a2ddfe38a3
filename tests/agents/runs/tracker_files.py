"""Read back what the trackers wrote, from their files alone (the backends' own readers
are heavy or absent: ``tensorboard`` is not installed, and wandb 0.31 reads its
``.wandb`` files only in its Go core)."""

from __future__ import annotations

import json
import struct
from collections import defaultdict
from pathlib import Path


def _tfrecords(path: Path):
    """Payloads of a TFRecord file: [length u64][crc u32][payload][crc u32] each."""
    data = path.read_bytes()
    position = 0
    while position < len(data):
        (length,) = struct.unpack_from("<Q", data, position)
        yield data[position + 12 : position + 12 + length]
        position += 12 + length + 4


def tensorboard_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] as TensorBoard shows it: files in name order, and a
    session start at step N (``purge_step``) hides earlier events at steps >= N."""
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    scalars: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for payload in _tfrecords(path):
            event = Event.FromString(payload)
            if event.session_log.status == SessionLog.START:
                for tag, points in scalars.items():
                    scalars[tag] = [(step, value) for step, value in points if step < event.step]
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars[value.tag].append((event.step, value.simple_value))
    return dict(scalars)


def tensorboard_texts(logdir: Path) -> dict[str, str]:
    """tag -> text of the ``add_text`` summaries."""
    from tensorboardX.proto.event_pb2 import Event

    texts = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for payload in _tfrecords(path):
            for value in Event.FromString(payload).summary.value:
                if value.HasField("tensor") and value.tensor.string_val:
                    texts[value.tag.removesuffix("/text_summary")] = value.tensor.string_val[
                        0
                    ].decode()
    return texts


#: The ``.wandb`` file is a LevelDB-style log: 32 KiB blocks of chunks, each with a
#: 7-byte header (crc u32, length u16, type u8: full, first, middle, last).
_WANDB_BLOCK, _WANDB_HEADER = 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def wandb_records(run_file: Path):
    """The ``wandb_internal_pb2.Record``s of an offline run's ``run-ID.wandb`` file."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = run_file.read_bytes()
    assert data[:4] == b":W&B", f"{run_file} is not a W&B transaction log"
    position, pending = _WANDB_HEADER, b""
    while position + _WANDB_HEADER <= len(data):
        left = _WANDB_BLOCK - position % _WANDB_BLOCK
        if left < _WANDB_HEADER:  # block padding
            position += left
            continue
        _, length, kind = struct.unpack_from("<IHB", data, position)
        chunk = data[position + _WANDB_HEADER : position + _WANDB_HEADER + length]
        position += _WANDB_HEADER + length
        if kind in (_FULL, _FIRST):
            pending = b""
        pending += chunk
        if kind in (_FULL, _LAST):
            yield Record.FromString(pending)


def wandb_run(run_file: Path) -> dict:
    """``{"config": {...}, "history": [{key: value}], "summary": {...}}`` of an offline run."""
    run = {"config": {}, "history": [], "summary": {}}

    def key(item) -> str:
        return item.key or "/".join(item.nested_key)

    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run["config"] |= {key(i): json.loads(i.value_json) for i in record.run.config.update}
        elif kind == "config":
            run["config"] |= {key(i): json.loads(i.value_json) for i in record.config.update}
        elif kind == "history":
            run["history"].append({key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            run["summary"] |= {key(i): json.loads(i.value_json) for i in record.summary.update}
    return run
