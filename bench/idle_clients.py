#!/usr/bin/env python3
"""A crowd of idle keep-alive clients for bench/idle.sh (issue 25, item 4).

Opens COUNT connections to hoard, spread over ADDRS loopback source addresses (each socket bound
before it connects: hoard admits at most proxy.max_connections_per_client, 256 by default, from
one address). Each connection sends one request, reads its answer, and then stays open and silent:

  mirror  plain HTTP/1.1 to the mirror listener: HEAD <path> (a keep-alive client between pulls)
  tunnel  CONNECT <host>:443 to the proxy listener, TLS through hoard's interception (trusting
          --cafile), then HEAD <path> over it (an idle client with its TLS session up)

Prints "ready N" once all are open. On SIGUSR1 it prints "open N of M": how many hoard has not
closed (a socket hoard closed polls readable). Exits on SIGTERM or SIGINT.
"""

import argparse
import concurrent.futures
import ipaddress
import select
import signal
import socket
import ssl
import sys


def read_head(sock):
    """Reads one response head (HEAD answers have no body); returns its status line."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the response head ended")
        data += chunk
    return data.split(b"\r\n", 1)[0].decode("latin-1")


def open_one(args, source, ctx):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24), 1)
    sock.bind((source, 0))
    sock.settimeout(60)
    host, port = args.server.rsplit(":", 1)
    sock.connect((host, int(port)))
    if args.kind == "tunnel":
        sock.sendall(f"CONNECT {args.host}:443 HTTP/1.1\r\nHost: {args.host}:443\r\n\r\n".encode())
        status = read_head(sock)
        if " 200" not in status:
            raise ConnectionError(f"CONNECT: {status}")
        sock = ctx.wrap_socket(sock, server_hostname=args.host)
        host_header = args.host
    else:
        host_header = args.server
    sock.sendall(f"HEAD {args.path} HTTP/1.1\r\nHost: {host_header}\r\n\r\n".encode())
    status = read_head(sock)
    if " 200" not in status:
        raise ConnectionError(f"HEAD {args.path}: {status}")
    sock.settimeout(None)
    return sock


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--kind", choices=["mirror", "tunnel"], required=True)
    p.add_argument("--server", required=True, help="addr:port of the listener")
    p.add_argument("--path", required=True, help="what each connection asks for (HEAD)")
    p.add_argument("--host", default="registry.bench", help="tunnel: the intercepted host")
    p.add_argument("--cafile", help="tunnel: hoard's CA")
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--addrs", type=int, default=40)
    p.add_argument("--first", default="127.0.0.10", help="the first source address")
    p.add_argument("--workers", type=int, default=16)
    args = p.parse_args()

    ctx = None
    if args.kind == "tunnel":
        ctx = ssl.create_default_context(cafile=args.cafile)
        ctx.set_alpn_protocols(["http/1.1"])
    first = ipaddress.IPv4Address(args.first)
    sources = [str(first + i % args.addrs) for i in range(args.count)]
    socks = []
    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        for sock in pool.map(lambda s: open_one(args, s, ctx), sources):
            socks.append(sock)
    print(f"ready {len(socks)}", flush=True)

    def check(_sig, _frame):
        poller = select.poll()
        for s in socks:
            poller.register(s.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
        closed = {fd for fd, _ in poller.poll(0)}
        print(f"open {len(socks) - len(closed)} of {len(socks)}", flush=True)

    signal.signal(signal.SIGUSR1, check)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # one failed connection fails the crowd: the bench reports it
        print(f"error: {e}", flush=True)
        sys.exit(1)
