"""aiokafka's producer CPU per record against its batch size, many senders awaiting.

    python -m bench.producer_batch [--records 30000] [--senders 500]

The connector's deliveries each await their own writes (the intent, the terminal audit
record), hundreds at a time. aiokafka keeps one open batch per partition; once it is
full, every further ``send`` to that partition waits (``asyncio.wait``) until the sender
has taken it, and they all wake together. This measures the producer alone: ``records``
~900-byte records over 6 partitions, ``senders`` at a time each awaiting its record's
acknowledgement, per batch size, alternated. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
import uuid

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from connector.settings import external_bootstrap_servers

__all__ = ["main"]

SIZES = (16_384, 65_536, 131_072, 524_288)


async def _run(bootstrap: str, batch: int, records: int, senders: int) -> tuple[float, float]:
    topic = f"bench-producer-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 6, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks=-1, max_batch_size=batch, max_request_size=3 << 20
    )
    await producer.start()
    value = b"x" * 900
    room = asyncio.Semaphore(senders)

    async def one(n: int) -> None:
        async with room:
            await (await producer.send(topic, value, key=str(n).encode(), partition=n % 6))

    before, started = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    try:
        await asyncio.gather(*(one(n) for n in range(records)))
    finally:
        after, ended = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        await producer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return records / (ended - started), cpu / records * 1e6


async def _main(records: int, senders: int, rounds: int) -> None:
    bootstrap = external_bootstrap_servers() or "127.0.0.1:9092"
    print("| batch bytes | round | records/s | CPU µs/record |\n|---:|---:|---:|---:|")
    for round_ in range(1, rounds + 1):
        for size in SIZES:
            rate, cpu = await _run(bootstrap, size, records, senders)
            print(f"| {size:,} | {round_} | {rate:,.0f} | {cpu:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=30_000)
    parser.add_argument("--senders", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(_main(args.records, args.senders, args.rounds))


if __name__ == "__main__":
    main()
