"""Sends COUNT datagrams of SIZE bytes (each ending in a newline) to HOST PORT as fast as it can.

Usage: python3 bench/udp_blast.py HOST PORT COUNT SIZE
"""
import socket
import sys

host, port, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
payload = b"x" * (size - 1) + b"\n"
family = socket.AF_INET6 if ":" in host else socket.AF_INET
sock = socket.socket(family, socket.SOCK_DGRAM)
sock.connect((host, port))
send = sock.send
for _ in range(count):
    send(payload)
