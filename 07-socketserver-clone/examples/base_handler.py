#!/usr/bin/env python3
"""A threaded echo server whose handler talks to the raw socket (self.request).

    python3 base_handler.py [-p PORT]          then: ../client -p PORT

Each reply is what one recv() returned, with "echo: " in front. That is one
message only by luck: TCP carries a stream of bytes, so two lines sent close
together can come out of one recv() glued, and a long line in pieces (粘包,
the sticky-packet problem). stream_handler.py reads whole lines instead.
base_handler.c is the same program in C.
"""
import argparse
import socketserver


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(b"welcome, send q to quit\n")
        while True:
            data = self.request.recv(1024)  # what has arrived: a line, if lucky
            if not data:
                break  # the client left
            if data.rstrip(b"\r\n") == b"q":
                self.request.sendall(b"bye\n")
                break
            self.request.sendall(b"echo: " + data)


def port(text):
    if not 0 <= int(text) <= 65535:
        raise ValueError(text)
    return int(text)


parser = argparse.ArgumentParser(description="0 picks a free port")
parser.add_argument("-p", dest="port", type=port, default=9701)
args = parser.parse_args()

with socketserver.ThreadingTCPServer(("127.0.0.1", args.port), EchoHandler) as server:
    server.daemon_threads = True  # on Ctrl-C, do not wait for connected clients
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
