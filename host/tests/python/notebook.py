"""The prototype notebook's use of the official Python client (azure-eventhub 5.15.1, unpatched).

Usage:
  python3 notebook.py send HUB < readings.jsonl   one JSON reading per event, in batches
  python3 notebook.py receive HUB QUIET_SECS       prints every event body of the hub, one per line

The connection string is taken from the environment variable GG_EVENTHUBS_CONNECTION_STRING.
`send` prints the number of events sent; `receive` reads from the start of every partition
until QUIET_SECS pass without an event. Exits non-zero with a reason on any failure.
"""

import os
import sys
import threading
import time

from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient

DEADLINE_SECS = 120


def send(conn_str, hub):
    lines = [line.strip() for line in sys.stdin if line.strip()]
    producer = EventHubProducerClient.from_connection_string(conn_str, eventhub_name=hub)
    sent = 0
    with producer:
        batch = producer.create_batch()
        for line in lines:
            try:
                batch.add(EventData(line))
            except ValueError:
                # The batch is full: send it and start the next one.
                producer.send_batch(batch)
                batch = producer.create_batch()
                batch.add(EventData(line))
            sent += 1
        if len(batch) > 0:
            producer.send_batch(batch)
    print(sent)


def receive(conn_str, hub, quiet):
    bodies = []
    last = [time.time()]
    lock = threading.Lock()

    def on_event(partition_context, event):
        if event is None:
            return
        with lock:
            bodies.append(event.body_as_str())
            last[0] = time.time()

    consumer = EventHubConsumerClient.from_connection_string(
        conn_str, consumer_group="$Default", eventhub_name=hub
    )
    worker = threading.Thread(
        target=lambda: consumer.receive(on_event=on_event, starting_position="-1", max_wait_time=1),
        daemon=True,
    )
    worker.start()
    deadline = time.time() + DEADLINE_SECS
    while time.time() < deadline:
        with lock:
            if time.time() - last[0] > quiet:
                break
        time.sleep(0.2)
    consumer.close()
    worker.join(10)
    for b in bodies:
        print(b)


def main():
    conn_str = os.environ.get("GG_EVENTHUBS_CONNECTION_STRING")
    if not conn_str:
        print("GG_EVENTHUBS_CONNECTION_STRING is not set", file=sys.stderr)
        sys.exit(2)
    mode, hub = sys.argv[1], sys.argv[2]
    if mode == "send":
        send(conn_str, hub)
    elif mode == "receive":
        receive(conn_str, hub, float(sys.argv[3]))
    else:
        print(f"unknown mode {mode}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
