/*
 * socketserver.h: Python's socketserver module, in C.
 *
 * Python builds a server from three pieces, and so does this library:
 *
 *     class ThreadingTCPServer(ThreadingMixIn, TCPServer)   a mix-in and a server type
 *     class MyHandler(StreamRequestHandler): def handle()    a request handler class
 *     server = ThreadingTCPServer(("127.0.0.1", 9700), MyHandler)
 *     server.serve_forever()
 *
 * in C:
 *
 *     static int my_handle(struct ss_handler *h) { ... h->rfile ... h->wfile ... }
 *     static const struct ss_handler_class MyHandler = {
 *         .base = &ss_StreamRequestHandler, .handle = my_handle};
 *     struct ss_server server;
 *     ss_server_init(&server, &ss_ThreadingMixIn, &ss_TCPServer, "127.0.0.1", 9700,
 *                    &MyHandler, true);
 *     ss_serve_forever(&server, 0.5);
 *
 * A Python method is a function pointer in server.ops; a subclass that
 * overrides a method is a program that replaces the pointer after
 * ss_server_init() (keep the old one to call it, as super() would). A class
 * attribute is a field that ss_server_init() copies from the type; set it on
 * the instance before server_bind()/server_activate() run (pass
 * bind_and_activate = false, set it, then call them), as Python's subclasses
 * set theirs before __init__ binds.
 *
 * Every method returns an int status where Python would raise: SS_OK, or
 * SS_ERROR (an Exception: handle_error() reports it and the server goes on),
 * or SS_EXIT (a SystemExit: the request is shut down and the loop ends).
 * C has no traceback, so the failing call and strerror(errno) are kept in
 * request->error by ss_fail(), and handle_error() prints them.
 */
#ifndef SOCKETSERVER_H
#define SOCKETSERVER_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>

enum { SS_OK = 0, SS_ERROR = -1, SS_EXIT = -2 };

struct ss_server;
struct ss_handler;

/* ================================ A request ================================ */

/* What get_request() returns: Python's (request, client_address). For a
 * stream server the request is the connected socket; for a datagram server
 * it is (packet, the server's socket), as in Python. */
struct ss_request {
    int fd;                        /* stream: the connection; datagram: server's socket */
    struct sockaddr_storage client_address;
    socklen_t client_address_len;  /* 0 for an unbound Unix datagram sender */
    unsigned char *packet;         /* datagram only: the bytes received (malloc'd) */
    size_t packet_len;             /* at most the server's max_packet_size */
    char error[160];               /* "where: call: reason", set by ss_fail() */
};

/* Record why a request failed ("handle: recv: Connection reset by peer"),
 * from errno, and return SS_ERROR. */
int ss_fail(struct ss_request *request, const char *what);

/* "('127.0.0.1', 54321)" or "'/tmp/sock'", as Python prints client_address. */
void ss_format_address(const struct sockaddr_storage *address, socklen_t len, char *out,
                       size_t size);

/* ============================ Request handlers ============================= */

/* A handler class: BaseRequestHandler and its subclasses. A slot left NULL
 * is inherited from .base, the way a Python subclass inherits a method. */
struct ss_handler_class {
    const char *name;
    const struct ss_handler_class *base;
    int (*setup)(struct ss_handler *h);
    int (*handle)(struct ss_handler *h);
    int (*finish)(struct ss_handler *h);
    /* StreamRequestHandler's class attributes (0 = Python's default). */
    double timeout;               /* seconds; 0 = None: block forever */
    bool disable_nagle_algorithm; /* true: TCP_NODELAY */
    int rbufsize;                 /* 0 = default buffering, else that size */
    int wbufsize;                 /* 0 = unbuffered: each write sent at once */
};

/* One instance per request, made by finish_request(), as Python makes one
 * handler object per request. */
struct ss_handler {
    const struct ss_handler_class *cls;
    struct ss_server *server;
    struct ss_request *request;
    const struct sockaddr_storage *client_address;
    int connection;               /* the socket to talk on */
    FILE *rfile;                  /* what the client sent */
    FILE *wfile;                  /* what to send back */
    char *reply;                  /* datagram: wfile's bytes (open_memstream) */
    size_t reply_len;
};

extern const struct ss_handler_class ss_BaseRequestHandler;
extern const struct ss_handler_class ss_StreamRequestHandler;
extern const struct ss_handler_class ss_DatagramRequestHandler;

/* Python's rfile.readline(size): read up to size - 1 bytes, through the
 * first '\n', into buf (NUL-terminated; the line may hold NUL bytes).
 * Returns its length, 0 at end of input, -1 on error (errno set). A line
 * longer than size - 1 comes back without its '\n': the caller decides. */
ssize_t ss_readline(FILE *rfile, char *buf, size_t size);

/* The connection's descriptor behind wfile (Python: wfile.fileno()). */
int ss_handler_fileno(const struct ss_handler *h);

/* ============================== Server classes ============================= */

/* BaseServer's methods, one slot each. */
struct ss_server_ops {
    int (*server_bind)(struct ss_server *s);
    int (*server_activate)(struct ss_server *s);
    int (*get_request)(struct ss_server *s, struct ss_request *r);
    bool (*verify_request)(struct ss_server *s, struct ss_request *r);
    int (*process_request)(struct ss_server *s, struct ss_request *r);
    int (*finish_request)(struct ss_server *s, struct ss_request *r);
    void (*handle_error)(struct ss_server *s, struct ss_request *r);
    void (*handle_timeout)(struct ss_server *s);
    void (*service_actions)(struct ss_server *s);
    void (*shutdown_request)(struct ss_server *s, struct ss_request *r);
    void (*close_request)(struct ss_server *s, struct ss_request *r);
    void (*server_close)(struct ss_server *s);
};

/* A server class: TCPServer, UDPServer, UnixStreamServer, UnixDatagramServer.
 * Its methods, and the class attributes each instance starts with. */
struct ss_server_type {
    const char *name;
    int address_family;           /* AF_INET or AF_UNIX */
    int socket_type;              /* SOCK_STREAM or SOCK_DGRAM */
    int request_queue_size;       /* listen() backlog: 5, as Python 3.11-3.14 */
    size_t max_packet_size;       /* datagram: longer ones are truncated (8192) */
    struct ss_server_ops ops;
};

extern const struct ss_server_type ss_TCPServer;
extern const struct ss_server_type ss_UDPServer;
extern const struct ss_server_type ss_UnixStreamServer;
extern const struct ss_server_type ss_UnixDatagramServer;

/* A mix-in: the methods it overrides (NULL: keep the server type's). In
 * Python the mix-in comes first in the bases so that its methods win; here
 * ss_server_init() writes the mix-in's slots over the type's, last. */
struct ss_mixin {
    const char *name;
    struct ss_server_ops ops;
};

extern const struct ss_mixin ss_SyncMixIn;      /* none: the plain server serves in its loop */
extern const struct ss_mixin ss_ThreadingMixIn; /* a thread per request */
extern const struct ss_mixin ss_ForkingMixIn;   /* a process per request */

/* The defaults the mix-ins start each instance with. */
#define SS_MAX_CHILDREN 40        /* ForkingMixIn.max_children */
#define SS_FORKING_TIMEOUT 300.0  /* ForkingMixIn.timeout, for handle_request() */

/* A thread the threading mix-in started and will join. */
struct ss_thread;

struct ss_server {
    /* ---- who it is: BaseServer.__init__'s arguments ---- */
    const struct ss_server_type *type;
    const struct ss_mixin *mixin;
    const struct ss_handler_class *RequestHandlerClass;
    struct ss_server_ops ops;     /* the methods in force: type's, then mix-in's */

    /* ---- class attributes, copied from the type and mix-in ---- */
    int address_family, socket_type;
    int request_queue_size;
    bool allow_reuse_address;     /* false, as in Python */
    bool allow_reuse_port;        /* false; only for AF_INET (gh-128916) */
    size_t max_packet_size;
    double timeout;               /* handle_request(): seconds, < 0 = None */

    /* ---- the socket ---- */
    int socket;                   /* -1 once server_close() ran */
    struct sockaddr_storage server_address; /* after bind: the real port */
    socklen_t server_address_len;

    /* ---- ThreadingMixIn ---- */
    bool daemon_threads;          /* false: server_close() joins the threads */
    bool block_on_close;          /* true (both mix-ins): server_close() waits */
    pthread_mutex_t threads_lock;
    struct ss_thread *threads;    /* started and not joined yet */

    /* ---- ForkingMixIn ---- */
    int max_children;             /* 40: at the limit the loop waits in waitpid() */
    pid_t *active_children;       /* the children it started, not reaped yet */
    int n_children;

    /* ---- serve_forever() and shutdown() ---- */
    volatile sig_atomic_t shutdown_requested; /* Python's __shutdown_request */
    bool is_shut_down;            /* Python's __is_shut_down event */
    bool serving;
    pthread_t serving_thread;
    pthread_mutex_t lock;
    pthread_cond_t shut_down;
    int wake[2];                  /* the self-pipe shutdown() writes to */

    void *user;                   /* the program's own state (Python: self.x = ...) */
};

/* BaseServer.__init__ + TCPServer.__init__: set up s for this mix-in, type,
 * address and handler. address is an IPv4 address (port used) or, for the
 * Unix types, a path. With bind_and_activate, bind and listen now; if that
 * fails, the socket is closed (no descriptor leaks) and SS_ERROR returned
 * with errno set. */
int ss_server_init(struct ss_server *s, const struct ss_mixin *mixin,
                   const struct ss_server_type *type, const char *address, int port,
                   const struct ss_handler_class *handler, bool bind_and_activate);

/* The calls a program makes; each one calls the method in s->ops. */
int ss_server_bind(struct ss_server *s);
int ss_server_activate(struct ss_server *s);
void ss_server_close(struct ss_server *s); /* idempotent; waits per block_on_close */
int ss_fileno(const struct ss_server *s);  /* -1 after server_close() */

/* Serve until shutdown(): wait for a request with poll(), at most
 * poll_interval seconds at a time, then call service_actions(). Returns
 * SS_OK, or SS_EXIT when a request ended with SS_EXIT. */
int ss_serve_forever(struct ss_server *s, double poll_interval);

/* Serve one request, waiting at most s->timeout seconds (< 0: forever);
 * on time-out call handle_timeout(). Returns the request's status. */
int ss_handle_request(struct ss_server *s);

/* Ask serve_forever() to stop and wait until it has. Unlike Python, the loop
 * wakes at once, and a call from the loop's own thread returns EDEADLK
 * (the stop is still requested) instead of waiting forever. Returns 0. */
int ss_shutdown(struct ss_server *s);

/* The first half of shutdown(), safe in a signal handler: set the flag and
 * wake the loop. It does not wait. */
void ss_request_shutdown(struct ss_server *s);

#endif
