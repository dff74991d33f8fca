"""A python-socketio client run as a separate process, so the test can kill or freeze it.

Usage: python _sio_client.py URL TRANSPORT MODE   (MODE: stay | leave)
Prints "ready" once connected and its hello was acknowledged.
"""

import asyncio
import sys

import socketio


async def main(url: str, transport: str, mode: str) -> None:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, transports=[transport], wait_timeout=10)
    await client.call("hello", "hi", timeout=10)
    print("ready", flush=True)
    if mode == "leave":
        await client.disconnect()
        return
    await asyncio.sleep(60)  # killed or frozen by the test before this ends
    await client.disconnect()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
