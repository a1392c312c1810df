"""Sends COUNT requests of 32 bytes, one after another, on one TCP connection
to an echo server at HOST PORT, waiting for each answer. Prints p50 and p99
round-trip times in microseconds.

Usage: python3 bench/round_trip.py HOST PORT COUNT
"""
import socket
import sys
import time

host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sock = socket.create_connection((host, port))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
request = b"r" * 31 + b"\n"
times = []
for _ in range(count):
    start = time.perf_counter_ns()
    sock.sendall(request)
    got = 0
    while got < len(request):
        chunk = sock.recv(4096)
        if not chunk:
            sys.exit("the echo server closed the connection")
        got += len(chunk)
    times.append((time.perf_counter_ns() - start) / 1000)
sock.close()
times.sort()
print(f"{times[len(times) // 2]:.1f} {times[int(len(times) * 0.99)]:.1f}")
