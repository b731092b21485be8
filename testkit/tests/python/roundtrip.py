"""A notebook-style round trip with the official Python client (azure-eventhub 5.15.1, unpatched).

Usage: python3 roundtrip.py CONNECTION_STRING

Sends one JSON reading per EventData in a batch (round-robin), a keyed batch, reads the hub and
partition properties, then receives everything back with EventHubConsumerClient and checks it.
Prints one JSON summary line last; exits non-zero with a reason on any mismatch.
"""

import datetime
import json
import sys
import threading
import time

from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient

HUB = "glucose_readings"
DEADLINE_SECS = 60


def fail(reason):
    print(f"FAIL: {reason}", file=sys.stderr)
    sys.exit(1)


def reading(patient, i):
    return {
        "reading_id": f"py-{patient}-{i}",
        "patient_id": patient,
        "device_id": 1000 + patient,
        "glucose_level": 100.0 + i,
        "timestamp": f"2026-11-28T10:{i:02d}:00Z",
    }


def main():
    conn_str = sys.argv[1]
    producer = EventHubProducerClient.from_connection_string(conn_str, eventhub_name=HUB)
    with producer:
        props = producer.get_eventhub_properties()
        partition_ids = list(props["partition_ids"])
        if props["eventhub_name"] != HUB or not partition_ids:
            fail(f"hub properties: {props}")
        if not isinstance(props["created_at"], datetime.datetime):
            fail(f"created_at is not a datetime: {props['created_at']!r}")

        sent = []
        batch = producer.create_batch()
        for i in range(6):
            body = json.dumps(reading(7, i))
            batch.add(EventData(body))
            sent.append(body)
        producer.send_batch(batch)

        keyed = producer.create_batch(partition_key="patient-8")
        for i in range(3):
            body = json.dumps(reading(8, i))
            keyed.add(EventData(body))
            sent.append(body)
        producer.send_batch(keyed)

        for pid in partition_ids:
            p = producer.get_partition_properties(pid)
            if not isinstance(p["last_enqueued_sequence_number"], int):
                fail(f"partition {pid}: sequence number type {p!r}")
            if not isinstance(p["last_enqueued_offset"], str):
                fail(f"partition {pid}: offset type {p!r}")
            if not isinstance(p["is_empty"], bool):
                fail(f"partition {pid}: is_empty type {p!r}")
            if not p["is_empty"] and not isinstance(p["last_enqueued_time_utc"], datetime.datetime):
                fail(f"partition {pid}: enqueued time type {p!r}")

    received = []
    lock = threading.Lock()

    def on_event(partition_context, event):
        if event is None:
            return
        with lock:
            received.append((partition_context.partition_id, event))

    consumer = EventHubConsumerClient.from_connection_string(
        conn_str, consumer_group="$Default", eventhub_name=HUB
    )
    worker = threading.Thread(
        target=lambda: consumer.receive(on_event=on_event, starting_position="-1", max_wait_time=1),
        daemon=True,
    )
    worker.start()
    deadline = time.time() + DEADLINE_SECS
    while time.time() < deadline:
        with lock:
            if len(received) >= len(sent):
                break
        time.sleep(0.2)
    # Anything extra would be a repeat: give it a moment to show up.
    time.sleep(1.0)
    consumer.close()
    worker.join(10)

    bodies = [e.body_as_str() for _, e in received]
    if sorted(bodies) != sorted(sent):
        fail(f"received {len(bodies)} bodies, sent {len(sent)}: {bodies}")
    key_partitions = {}
    for pid, e in received:
        if not isinstance(e.sequence_number, int) or not isinstance(e.offset, str):
            fail(f"annotations of {e!r}")
        if not isinstance(e.enqueued_time, datetime.datetime):
            fail(f"enqueued time of {e!r}")
        if e.partition_key is not None:
            key = e.partition_key.decode() if isinstance(e.partition_key, bytes) else e.partition_key
            key_partitions.setdefault(key, set()).add(pid)
    if set(key_partitions) != {"patient-8"} or len(key_partitions["patient-8"]) != 1:
        fail(f"keyed events: {key_partitions}")
    per_partition = {}
    for pid, e in received:
        per_partition.setdefault(pid, []).append(e.sequence_number)
    for pid, seqs in per_partition.items():
        if seqs != list(range(len(seqs))):
            fail(f"partition {pid}: sequence numbers {seqs}")
    print(
        json.dumps(
            {
                "received": len(received),
                "partitions": sorted(per_partition),
                "key_partitions": {k: sorted(v) for k, v in key_partitions.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
