"""A real DNS server (dnslib's) whose A records a test changes while it runs.

Usage: dns_server.py --port 0 --records FILE [--ttl SECONDS]

FILE is JSON: {"name.": ["127.0.0.2", "127.0.0.3"], ...}, read again at every query, so
a test changes the answers by rewriting it (write a temporary file and rename it over).
A name in the file gets its A records (AAAA queries: an empty NOERROR answer); a name
that is not in the file gets NXDOMAIN; a name mapped to "SERVFAIL" gets SERVFAIL.
Serves UDP and TCP on 127.0.0.1 and prints `PORT <n>` once both listen; stops at
SIGTERM/SIGINT or when its stdin (a pipe) closes, so it dies with the test that runs it.
"""

import argparse
import json
import signal
import sys
import threading

from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class FileResolver(BaseResolver):
    def __init__(self, path, ttl):
        self.path = path
        self.ttl = ttl

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).lower()
        try:
            with open(self.path, encoding="utf-8") as f:
                records = {k.lower(): v for k, v in json.load(f).items()}
        except (OSError, ValueError):
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        answer = records.get(name)
        if answer is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif answer == "SERVFAIL":
            reply.header.rcode = RCODE.SERVFAIL
        elif request.q.qtype == QTYPE.A:
            for ip in answer:
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(ip), ttl=self.ttl))
        return reply


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--records", required=True)
    ap.add_argument("--ttl", type=int, default=1)
    args = ap.parse_args()
    resolver = FileResolver(args.records, args.ttl)
    quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
    udp = DNSServer(resolver, port=args.port, address="127.0.0.1", logger=quiet)
    port = udp.server.server_address[1]
    tcp = DNSServer(resolver, port=port, address="127.0.0.1", logger=quiet, tcp=True)
    udp.start_thread()
    tcp.start_thread()
    print(f"PORT {port}", flush=True)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    if not sys.stdin.isatty():
        def wait_stdin():
            sys.stdin.read()
            done.set()

        threading.Thread(target=wait_stdin, daemon=True).start()
    done.wait()
    udp.stop()
    tcp.stop()


if __name__ == "__main__":
    main()
