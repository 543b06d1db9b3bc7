# Python's socketserver, for `bench` (embedded in the bench binary).
#
#   python3 compare.py serve KIND HOST:PORT
#       KIND: threading-tcp (ThreadingTCPServer), forking-tcp (ForkingTCPServer),
#       tcp (TCPServer), threading-udp (ThreadingUDPServer), udp (UDPServer).
#       An echo server with
#       the library's defaults (request_queue_size 5, max_children 40); only
#       TCP_NODELAY is turned on (disable_nagle_algorithm), as every other
#       server in the comparison does. Prints `listening on SCHEME://ADDR`,
#       serves until killed.
#   python3 compare.py shutdown RUNS BUSY
#       Starts a ThreadingTCPServer RUNS times, serves one request (BUSY=0) or
#       lets BUSY client threads hammer it, calls shutdown() and measures the
#       time until serve_forever returns. Prints one JSON object.
import json
import socket
import socketserver
import sys
import threading
import time


class StreamEcho(socketserver.StreamRequestHandler):
    disable_nagle_algorithm = True

    def handle(self):
        conn = self.request
        while True:
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data)


class DatagramEcho(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(data, self.client_address)


class ThreadingTCP(socketserver.ThreadingTCPServer):
    daemon_threads = True


class ThreadingUDP(socketserver.ThreadingUDPServer):
    daemon_threads = True


KINDS = {
    "threading-tcp": (ThreadingTCP, StreamEcho, "tcp"),
    "forking-tcp": (socketserver.ForkingTCPServer, StreamEcho, "tcp"),
    "tcp": (socketserver.TCPServer, StreamEcho, "tcp"),
    "threading-udp": (ThreadingUDP, DatagramEcho, "udp"),
    "udp": (socketserver.UDPServer, DatagramEcho, "udp"),
}


def serve(kind, addr):
    cls, handler, scheme = KINDS[kind]
    host, port = addr.rsplit(":", 1)
    cls.allow_reuse_address = True
    server = cls((host, int(port)), handler)
    h, p = server.server_address[:2]
    print(f"listening on {scheme}://{h}:{p}", flush=True)
    server.serve_forever()


def busy_client(addr, stop, trips):
    ping = b"\x07" * 64
    while not stop.is_set():
        try:
            c = socket.create_connection(addr, timeout=1)
        except OSError:
            time.sleep(0.001)
            continue
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for _ in range(10):
                c.sendall(ping)
                got = 0
                while got < 64:
                    d = c.recv(64 - got)
                    if not d:
                        raise OSError("closed")
                    got += len(d)
                trips[0] += 1
        except OSError:
            pass
        finally:
            c.close()


def shutdown_latency(runs, busy):
    samples = []
    load = 0
    for _ in range(runs):
        server = ThreadingTCP(("127.0.0.1", 0), StreamEcho)
        addr = server.server_address
        returned = []

        def run():
            server.serve_forever()
            returned.append(time.monotonic())

        t = threading.Thread(target=run)
        t.start()
        stop = threading.Event()
        trips = [0]
        clients = [threading.Thread(target=busy_client, args=(addr, stop, trips)) for _ in range(busy)]
        for c in clients:
            c.start()
        want = 500 if busy else 1
        if not busy:
            with socket.create_connection(addr, timeout=10) as c:
                c.sendall(b"x")
                c.recv(1)
            trips[0] += 1
        end = time.monotonic() + 10
        while trips[0] < want and time.monotonic() < end:
            time.sleep(0.001)
        asked = time.monotonic()
        server.shutdown()  # blocks until serve_forever has returned
        t.join()
        samples.append((returned[0] - asked) * 1000.0)
        stop.set()
        # Closing the listening socket first resets the connections still
        # waiting in its backlog, so no client waits out its 1 s timeout.
        server.server_close()
        for c in clients:
            c.join()
        load += trips[0]
    print(json.dumps({"samples_ms": samples, "load_requests": load}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "shutdown":
        shutdown_latency(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit("usage: compare.py serve KIND HOST:PORT | shutdown RUNS BUSY")
