"""Opens COUNT TCP connections to HOST PORT at once, then each sends one line
"client N\n" and closes. Prints the wall time in seconds.

Usage: python3 bench/many_clients.py HOST PORT COUNT
"""
import asyncio
import resource
import sys
import time

host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def main():
    start = time.monotonic()
    writers = []
    failed = 0
    for i in range(0, count, 500):  # connect in waves, all held open
        batch = [asyncio.open_connection(host, port) for _ in range(min(500, count - i))]
        for result in await asyncio.gather(*batch, return_exceptions=True):
            if isinstance(result, Exception):
                failed += 1
            else:
                writers.append(result[1])
    for n, writer in enumerate(writers):
        writer.write(f"client {n}\n".encode())
    await asyncio.gather(*(w.drain() for w in writers), return_exceptions=True)
    for writer in writers:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
    print(f"{time.monotonic() - start:.3f} {failed}")


asyncio.run(main())
