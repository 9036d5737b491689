#!/usr/bin/env python3
"""Userspace link shaper for the benchmark's network namespaces (DESIGN §6).

This kernel has no sch_netem, so one-way delay, jitter and burst loss are
added here. Run inside one namespace, it owns a TUN device; the namespace
routes the peer's address through it (bench/netns.ts sets that up, with a
tbf rate limit on the TUN device, so packets reach us already paced as a
modem's uplink would pace them). Each IPv4 packet read from the TUN device
is
  - dropped with a Gilbert-Elliott burst model when --loss > 0 (Bernoulli
    loss stays with nftables on the peer's ingress),
  - held for --delay-ms (+ uniform jitter, never reordering),
  - then written as an Ethernet frame straight onto the veth (AF_PACKET),
    addressed to the peer's MAC, where the peer's kernel receives it.

Order along the path is rate -> delay -> loss, as on a satellite uplink.

  shaper.py --tun NAME --dev VETH --peer-mac MAC --delay-ms N
            [--jitter-ms N] [--loss P --burst B] [--seed S]

Prints "ready" once the TUN device exists, and one JSON line of counters
when it gets SIGTERM.
"""
import argparse
import fcntl
import heapq
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
ETH_P_IP = 0x0800


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tun", required=True)
    ap.add_argument("--dev", required=True)
    ap.add_argument("--peer-mac", required=True)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--jitter-ms", type=float, default=0.0)
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--burst", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    rng = random.Random(a.seed)
    tun = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", a.tun.encode(), IFF_TUN | IFF_NO_PI))
    out = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    out.bind((a.dev, 0))
    src = open(f"/sys/class/net/{a.dev}/address").read().strip()
    header = bytes.fromhex(a.peer_mac.replace(":", "")) + bytes.fromhex(src.replace(":", "")) + struct.pack("!H", ETH_P_IP)

    # Gilbert-Elliott with all loss in the Bad state: long-run loss p, mean
    # burst length b packets (the same model as src/sim/link.ts).
    p = a.loss
    to_good = 1.0 / a.burst
    to_bad = 1.0 if p >= 1 else min(1.0, p / (a.burst * (1 - p))) if p > 0 else 0.0
    bad = False

    held: list = []  # (due, seq, frame)
    seq = 0
    last_due = 0.0
    stats = {"read": 0, "dropped": 0, "sent": 0, "send_errors": 0}
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)

    while running:
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, _, frame = heapq.heappop(held)
            try:
                out.send(frame)
                stats["sent"] += 1
            except OSError:
                stats["send_errors"] += 1
        timeout = max(0.0, held[0][0] - now) if held else 0.5
        try:
            ready, _, _ = select.select([tun], [], [], timeout)
        except InterruptedError:
            continue
        if not ready:
            continue
        now = time.monotonic()
        while True:
            try:
                pkt = os.read(tun, 65536)
            except BlockingIOError:
                break
            stats["read"] += 1
            if pkt[0] >> 4 != 4:
                continue  # IPv4 only
            if p > 0:
                bad = (rng.random() >= to_good) if bad else (rng.random() < to_bad)
                if bad:
                    stats["dropped"] += 1
                    continue
            due = now + (a.delay_ms + (rng.uniform(0, a.jitter_ms) if a.jitter_ms > 0 else 0)) / 1000
            due = max(due, last_due)  # jitter never reorders
            last_due = due
            seq += 1
            heapq.heappush(held, (due, seq, header + pkt))
    sys.stdout.write(json.dumps(stats) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
