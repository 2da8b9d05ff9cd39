#!/usr/bin/env python3
"""The course's echo protocol on Python's socketserver: the reference 07 is measured against.

    socketserver_echo.py [-H host] [-p port] [-m max-clients] [-q]
                         [--threading | --forking] [--max-children N]

The design the source articles teach: a ThreadingTCPServer (or ForkingTCPServer)
and a StreamRequestHandler whose handle() reads lines from rfile and writes
replies to wfile. It speaks the course's whole wire protocol (README.md: the
greeting, exact echo, quit, sleep, the 4096-byte limit, "error server busy"),
so scripts/loadgen and the suite drive it like any chapter. The greeting names
it "python-socketserver". Nothing here is tuned for speed: it is what a careful
Python programmer would write, so the benchmark compares 07 with the real thing.

Three things socketserver leaves undone are done here, so that the reference
keeps the promises every chapter keeps (the suite's python-socketserver rows
check them, tests/expectations.txt): a lingering close (EchoHandler.finish),
a spare descriptor for when they run out (CappedMixIn.get_request), and a log
that never blocks on a full stderr (write_log).
"""
import argparse
import errno
import ipaddress
import os
import select
import signal
import socket
import socketserver
import sys
import threading
import time

MAX_LINE = 4096  # the longest line the protocol accepts, "\r\n" not counted
MAX_SLEEP_MS = 10000  # "sleep <ms>" stands for slow work; bounded so tests stay short
# The lingering close (EchoHandler.finish): after our FIN, read and throw away
# what the client still sends, until its EOF, or this long, or this much.
LINGER_SECONDS = 2
LINGER_BYTES = 1024 * 1024


def write_log(text):
    """A log line to stderr, unless that would block: a stderr pipe nobody
    reads must not freeze the server (setup.c in the chapters says more)."""
    poller = select.poll()
    poller.register(sys.stderr.fileno(), select.POLLOUT)
    if poller.poll(0):
        try:
            os.write(sys.stderr.fileno(), text.encode())
        except BlockingIOError:
            pass  # a lost log line is not worth an error


class EchoHandler(socketserver.StreamRequestHandler):
    """One client, from greeting to close. rfile is buffered (one recv() may
    bring several lines, the "sticky packets"); wfile is not, so each write()
    is one sendall() and a reply leaves at once."""

    def handle(self):
        self.server.log(f"connect {self.peer()}")
        try:
            self.reply(f"hello chapter=python-socketserver pid={os.getpid()} "
                       f"tid={threading.get_native_id()} port={self.server.server_address[1]}")
            why = self.serve_lines()
        except ConnectionError as error:  # a reset costs this client only, quietly
            why = error.strerror
        self.server.log(f"disconnect {self.peer()}: {why}")

    def finish(self):
        """The lingering close, as in every chapter: socketserver's own close
        (shutdown_request: shutdown, then close at once) meets the bytes a
        client sent after "quit" unread, and the kernel answers them with a
        reset that throws away the replies not yet delivered. So: send our FIN
        after the replies, then read and discard until the client's EOF."""
        super().finish()  # flushes and closes wfile and rfile
        try:
            self.connection.shutdown(socket.SHUT_WR)
            deadline, discarded = time.monotonic() + LINGER_SECONDS, 0
            while discarded <= LINGER_BYTES and time.monotonic() < deadline:
                self.connection.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = self.connection.recv(65536)
                if not chunk:
                    break  # its EOF: now close() sends nothing but our FIN
                discarded += len(chunk)
        except OSError:
            pass  # reset, or the time ran out: close anyway

    def serve_lines(self):
        """Answer line after line; return why the conversation ended."""
        while True:
            # At most a longest line and "\r\n": a client cannot make us hold
            # more while we wait for its "\n".
            line = self.rfile.readline(MAX_LINE + 2)
            if not line.endswith(b"\n"):
                if len(line) == MAX_LINE + 2:
                    return self.too_long()
                return "client closed"  # EOF; an unfinished last line is dropped
            line = line[:-1]
            if line.endswith(b"\r"):
                line = line[:-1]  # telnet and "nc -C" end lines with "\r\n"
            if len(line) > MAX_LINE:
                return self.too_long()
            if line in (b"quit", b"exit", b"q"):
                self.reply("bye")
                return "quit"
            if line == b"sleep" or line.startswith(b"sleep "):
                self.sleep(line[6:])
            else:
                self.wfile.write(line + b"\n")  # bytes, so any byte passes untouched

    def sleep(self, arg):
        # bytes.isdigit() accepts ASCII digits only; leading zeros are allowed,
        # and five digits after them bound int().
        if not (arg.isdigit() and len(arg.lstrip(b"0")) <= 5 and int(arg) <= MAX_SLEEP_MS):
            self.reply(f"error usage: sleep <ms> with 0 <= ms <= {MAX_SLEEP_MS}")
            return
        self.server.log(f"{self.peer()} sleeps {int(arg)} ms")
        time.sleep(int(arg) / 1000)  # blocks this thread (or process) only
        self.reply(f"slept {int(arg)}")

    def too_long(self):
        self.reply(f"error line too long (max {MAX_LINE} bytes)")
        return "line too long"

    def reply(self, text):
        self.wfile.write(text.encode() + b"\n")

    def peer(self):
        return "%s:%d" % self.client_address


class CappedMixIn:
    """-m: at most max_clients at once; the next one hears "error server busy".
    verify_request() is socketserver's hook for refusing a connection: on False
    the server closes it without calling process_request()."""
    max_clients = 1000
    quiet = False
    # The longest accept queue the kernel allows (Python 3.15's default; before
    # it, 5): with 5, a hundred clients connecting at once see SYNs dropped.
    request_queue_size = socket.SOMAXCONN
    allow_reuse_address = True  # restart at once on a port in TIME_WAIT

    def verify_request(self, request, client_address):
        if self.clients() < self.max_clients:
            return True
        request.sendall(b"error server busy\n")
        self.log("refused %s:%d: server busy" % client_address)
        return False

    def log(self, what):
        if not self.quiet:
            write_log(f"server: {what}\n")

    # One descriptor kept open for the day they run out (see get_request).
    spare_fd = os.open(os.devnull, os.O_RDONLY)

    def get_request(self):
        """accept(). Out of descriptors (EMFILE), socketserver would drop the
        error and call accept() again at once, forever: a spin at full CPU.
        As the chapters' overload.c and libuv do, the spare descriptor gets
        us out: give it up, accept the waiting client, tell it we are busy,
        take the spare back."""
        try:
            return super().get_request()
        except OSError as error:
            if error.errno == errno.EMFILE:
                os.close(CappedMixIn.spare_fd)
                try:
                    request, _ = self.socket.accept()
                    with request:
                        request.sendall(b"error server busy\n")
                except OSError:
                    pass
                CappedMixIn.spare_fd = os.open(os.devnull, os.O_RDONLY)
            raise  # socketserver skips this turn


# The mix-in comes first in the bases, so its methods and attributes win over
# TCPServer's, exactly as ThreadingMixIn's process_request() does.
class ThreadingServer(CappedMixIn, socketserver.ThreadingTCPServer):
    daemon_threads = True  # SIGTERM does not wait for connected clients

    def clients(self):
        return threading.active_count() - 1  # every thread but this main one


class ForkingServer(CappedMixIn, socketserver.ForkingTCPServer):
    block_on_close = False  # on exit, children go on serving their clients

    # A cap above max_children never triggers: the server blocks at
    # max_children first, in collect_children(), as Python's does.
    def clients(self):
        return len(self.active_children or ())  # not yet reaped ones included


def parse_args():
    # prog: the usage reads "usage: server ...", like every chapter's server.
    parser = argparse.ArgumentParser(prog="server", description="An echo server on socketserver.")
    # An IPv4 address, as in every chapter: a name such as localhost is refused.
    parser.add_argument("-H", dest="host", default="127.0.0.1", type=ipaddress.IPv4Address)
    # 9800: beside 07's 9700, so the two can run side by side.
    parser.add_argument("-p", dest="port", type=int, default=9800, help="0: a free port")
    parser.add_argument("-m", dest="max_clients", type=int, default=1000)
    parser.add_argument("-q", dest="quiet", action="store_true", help="no connect log")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--threading", dest="server", action="store_const",
                      const=ThreadingServer, default=ThreadingServer)
    mode.add_argument("--forking", dest="server", action="store_const", const=ForkingServer)
    # ForkingMixIn stops accepting at max_children (40), blocked in waitpid()
    # until a child ends. The benchmark holds 100 and 910 clients open at once,
    # each of which must be greeted: it passes a higher cap, as it does to 07.
    parser.add_argument("--max-children", type=int, default=40)
    args = parser.parse_args()
    if not 0 <= args.port <= 65535 or args.max_clients < 1 or args.max_children < 1:
        parser.error("port must be 0..65535, -m and --max-children at least 1")
    return args


def main():
    args = parse_args()
    # SIGTERM behaves like Ctrl-C: KeyboardInterrupt leaves serve_forever().
    # SIGINT is set too: a shell starts background jobs with it ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)
    try:
        server = args.server((str(args.host), args.port), EchoHandler)
    except OSError as error:  # the port is in use, say
        sys.exit(f"server: cannot listen on {args.host}:{args.port}: {error.strerror}")
    server.max_clients, server.quiet = args.max_clients, args.quiet
    server.max_children = args.max_children  # read by ForkingMixIn only
    with server:  # server_close() on the way out
        host, port = server.server_address
        print(f"listening on {host}:{port}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            write_log("server: stopping\n")  # said even with -q


if __name__ == "__main__":
    main()
