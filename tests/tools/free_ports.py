#!/usr/bin/env python3
"""Prints COUNT distinct TCP ports on 127.0.0.1 that nothing listens on now, for the test servers.

They come from below the kernel's ephemeral range (net.ipv4.ip_local_port_range), picked at random:
a port the kernel hands out for "any free port" (bind to 0) or as the local end of an outgoing
connection can be taken by another test's client between the pick and the server's bind, and the
tests run in parallel. Ports below that range are only ever taken by an explicit bind."""
import random
import socket
import sys


def ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    low, high = 10000, ephemeral_low()
    if high - low < 1000:  # an unusual range: fall back to the kernel's pick
        ports = []
        socks = [socket.socket() for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
        for s in socks:
            s.close()
        print(" ".join(map(str, ports)))
        return
    rng = random.SystemRandom()
    ports = []
    while len(ports) < count:
        p = rng.randrange(low, high)
        if p not in ports and free(p):
            ports.append(p)
    print(" ".join(map(str, ports)))


if __name__ == "__main__":
    main()
