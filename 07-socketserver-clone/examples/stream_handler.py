#!/usr/bin/env python3
"""A threaded echo server whose handler reads lines from rfile, writes to wfile.

    python3 stream_handler.py [-p PORT]        then: ../client -p PORT

rfile is the socket behind a buffer: readline() returns exactly one line
however the bytes arrived, glued to the next line or split in pieces, and
keeps the rest for the next call. The client must end its lines with "\\n".
Compare base_handler.py. stream_handler.c is the same program in C.
"""
import argparse
import socketserver


class EchoHandler(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(b"welcome, send exit to quit\n")
        while True:
            line = self.rfile.readline(1024)  # one line, or 1024 bytes of a longer one
            if not line:
                break  # the client left
            if line.rstrip(b"\r\n") == b"exit":
                self.wfile.write(b"bye\n")
                break
            self.wfile.write(b"echo: " + line)


def port(text):
    if not 0 <= int(text) <= 65535:
        raise ValueError(text)
    return int(text)


parser = argparse.ArgumentParser(description="0 picks a free port")
parser.add_argument("-p", dest="port", type=port, default=9702)
args = parser.parse_args()

with socketserver.ThreadingTCPServer(("127.0.0.1", args.port), EchoHandler) as server:
    server.daemon_threads = True  # on Ctrl-C, do not wait for connected clients
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
