"""A notifications service in miniature, as its own process: listen_alerts under a
consumer name, one JSON line per event and per state change on stdout. SIGTERM stops
it as a deploy does (the iteration closed: its position written, its lock freed).

    python listener_process.py DSN CONSUMER
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys

from silentpulse_db import listen_alerts


def say(**line: object) -> None:
    print(json.dumps(line), flush=True)


async def main(dsn: str, consumer: str) -> None:
    listener = listen_alerts(
        dsn, consumer=consumer, initial_backoff=0.1, max_backoff=0.5, standby_poll=0.2
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def consume() -> None:
        async for event in listener:
            say(id=event.id, alert=str(event.alert_id), status=event.status)

    async def report_states() -> None:
        state = None
        while True:
            if listener.state != state:
                state = listener.state
                say(state=state)
            await asyncio.sleep(0.02)

    consuming = asyncio.create_task(consume())
    reporting = asyncio.create_task(report_states())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({consuming, stopping}, return_when="FIRST_COMPLETED")
    for task in (consuming, reporting):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    say(state="stopped")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
