/*
 * relay._splice: the splice's steady state (data frames both ways) on a thread of its own.
 *
 * Why: a relayed round trip crosses the gateway twice, and in Python each crossing costs a reactor
 * wake-up, a read, a frame rewrite and a send in the interpreter. Measured, a Twisted process that
 * only forwards bytes already adds more to the p99 than the latency target allows (docs/benchmarks.md).
 * This thread does the same work as relay.hybrid.frames.FrameRelay plus the splice's reads and writes,
 * without the interpreter and without the GIL.
 *
 * What it does not do, it hands back: the thread relays data frames (opcodes 0, 1, 2, masked, no
 * reserved bits, in a valid fragment order) and nothing else. At the first frame that is anything else
 * (a ping, a close, a broken header), at end of file and at a socket error, it stops watching the pair
 * and tells Python (the notify eventfd), which takes the pair back with every byte the thread held and
 * the rewriter's state, and carries on in relay.hybrid.bridge as if it had read them itself. So the
 * rules for control frames, closing and errors exist once, in Python.
 *
 * Sockets: the thread uses the legs' descriptors and never closes them. Python takes a pair back before
 * it closes either leg (relay.hybrid.bridge wraps the transports' connectionLost), so a descriptor is
 * never closed, and its number never reused, while the thread may still use it. (Copies made with dup()
 * would double the descriptors an idle pair costs, against the same process limit.)
 *
 * Back-pressure: per direction the thread holds at most one read (what the other leg's socket did not
 * take); while it does, it stops reading the leg those bytes came from, as the Python splice does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define HEADROOM 16 /* in front of each read: room for a held partial header (at most 13 bytes) */
#define MAX_HELD 14
#define MAX_EVENTS 256

enum { ACTIVE = 1, EJECTED = 2 };
enum { REASON_NONE = 0, REASON_FRAME = 1, REASON_EOF = 2, REASON_ERROR = 3 };

/* Bytes read from one leg, rewritten for the other. Mirrors FrameRelay's state. */
typedef struct {
    uint64_t remaining;          /* payload bytes of the current data frame still to come */
    unsigned char mask[4];       /* that frame's masking key */
    unsigned offset;             /* index into the key of the next payload byte, 0-3 */
    int in_message;              /* a fragmented data message is open */
    unsigned char held[MAX_HELD]; /* the start of a header whose rest has not arrived */
    unsigned held_len;
    char *pending;               /* rewritten bytes the other leg's socket did not take */
    size_t pending_len;
    char *leftover;              /* input from the first frame the thread does not relay */
    size_t leftover_len;
    uint64_t read_bytes;         /* read from the leg since the last collect */
    uint64_t relayed_bytes;      /* rewritten bytes sent or queued for the other leg, idem */
} Direction;

typedef struct {
    int fd[2];        /* 0 the sender, 1 the listener: Python's, never closed here */
    Direction dir[2]; /* dir[i] reads fd[i] and writes fd[1 - i] */
    uint32_t events[2];
    int state;
    int reason;
    int dirty; /* on the dirty list (counters changed since the last collect) */
} Pair;

typedef struct {
    PyObject_HEAD
    int epoll_fd;
    int notify_fd; /* Python watches this: the thread ejected pairs */
    int wake_fd;   /* the thread watches this: stop */
    size_t read_size;
    unsigned char *scratch;
    pthread_t thread;
    int thread_started;
    int stopping;
    pthread_mutex_t lock;
    Pair **pairs; /* by slot */
    uint32_t *gens;
    size_t capacity;
    size_t *free_slots;
    size_t free_count;
    size_t next_slot;
    uint64_t *ejected;
    size_t ejected_len, ejected_cap;
    uint64_t *dirty;
    size_t dirty_len, dirty_cap;
    size_t active;
} Pump;

/* ---------------------------------------------------------------- the rewriter (no I/O) */

/* Move n bytes from src to dst (dst <= src) and unmask them with key starting at key[offset]. */
static void unmask_move(unsigned char *dst, const unsigned char *src, size_t n, const unsigned char key[4],
                        unsigned offset)
{
    unsigned char rotated[8];
    for (int k = 0; k < 8; k++)
        rotated[k] = key[(offset + k) & 3];
    uint64_t word_key;
    memcpy(&word_key, rotated, 8);
    size_t k = 0;
    for (; k + 8 <= n; k += 8) {
        uint64_t word;
        memcpy(&word, src + k, 8);
        word ^= word_key;
        memcpy(dst + k, &word, 8);
    }
    for (; k < n; k++)
        dst[k] = src[k] ^ rotated[k & 7];
}

/*
 * Rewrite buf[start:end] in place. Returns the number of output bytes, written from buf + start.
 * *stop is set to the position of the first frame left for Python, or to end when there is none;
 * bytes between the last complete header and end (a partial header) go to d->held.
 */
static size_t rewrite(Direction *d, unsigned char *buf, size_t start, size_t end, size_t *stop)
{
    size_t pos = start, written = start;
    *stop = end;
    while (pos < end) {
        if (d->remaining) {
            uint64_t available = end - pos;
            size_t take = (size_t)(d->remaining < available ? d->remaining : available);
            unmask_move(buf + written, buf + pos, take, d->mask, d->offset);
            written += take;
            pos += take;
            d->offset = (unsigned)((d->offset + take) & 3);
            d->remaining -= take;
            continue;
        }
        if (end - pos < 2)
            break;
        unsigned char b0 = buf[pos], b1 = buf[pos + 1];
        unsigned opcode = b0 & 0x0F;
        int fin = (b0 & 0x80) != 0;
        /* Anything but a well-formed data frame goes to Python, which answers or fails it. */
        if (!(b1 & 0x80) || (b0 & 0x70) || opcode > 2 || (opcode == 0 && !d->in_message) ||
            (opcode != 0 && d->in_message)) {
            *stop = pos;
            return written - start;
        }
        uint64_t length = b1 & 0x7F;
        size_t header = 6;
        if (length == 126) {
            header = 8;
            if (end - pos < header)
                break;
            length = ((uint64_t)buf[pos + 2] << 8) | buf[pos + 3];
        } else if (length == 127) {
            header = 14;
            if (end - pos < header)
                break;
            length = 0;
            for (int k = 0; k < 8; k++)
                length = (length << 8) | buf[pos + 2 + k];
            if (length >> 63) {
                *stop = pos;
                return written - start;
            }
        } else if (end - pos < header) {
            break;
        }
        memcpy(d->mask, buf + pos + header - 4, 4);
        d->offset = 0;
        d->in_message = !fin;
        /* The unmasked header: the same first byte, the length without the mask bit. */
        buf[written] = b0;
        if (length < 126) {
            buf[written + 1] = (unsigned char)length;
            written += 2;
        } else if (length < 65536) {
            buf[written + 1] = 126;
            buf[written + 2] = (unsigned char)(length >> 8);
            buf[written + 3] = (unsigned char)length;
            written += 4;
        } else {
            buf[written + 1] = 127;
            for (int k = 0; k < 8; k++)
                buf[written + 2 + k] = (unsigned char)(length >> (56 - 8 * k));
            written += 10;
        }
        pos += header;
        d->remaining = length;
    }
    d->held_len = (unsigned)(end - pos);
    memcpy(d->held, buf + pos, d->held_len);
    return written - start;
}

/* ---------------------------------------------------------------- the pair table */

static uint64_t handle_of(Pump *self, size_t slot) { return ((uint64_t)self->gens[slot] << 32) | slot; }

static Pair *pair_of(Pump *self, uint64_t handle)
{
    size_t slot = (size_t)(handle & 0xFFFFFFFFu);
    if (slot >= self->next_slot || self->gens[slot] != (uint32_t)(handle >> 32))
        return NULL;
    return self->pairs[slot];
}

static int push_u64(uint64_t **items, size_t *len, size_t *cap, uint64_t value)
{
    if (*len == *cap) {
        size_t cap2 = *cap ? 2 * *cap : 64;
        uint64_t *grown = realloc(*items, cap2 * sizeof(uint64_t));
        if (!grown)
            return -1;
        *items = grown;
        *cap = cap2;
    }
    (*items)[(*len)++] = value;
    return 0;
}

static void mark_dirty(Pump *self, Pair *pair, uint64_t handle)
{
    if (!pair->dirty && push_u64(&self->dirty, &self->dirty_len, &self->dirty_cap, handle) == 0)
        pair->dirty = 1;
}

/* ---------------------------------------------------------------- the thread */

static void watch(Pump *self, Pair *pair, uint64_t handle, int side, uint32_t events)
{
    if (pair->events[side] == events)
        return;
    struct epoll_event ev = {.events = events, .data.u64 = (handle << 1) | (uint64_t)side};
    epoll_ctl(self->epoll_fd, EPOLL_CTL_MOD, pair->fd[side], &ev);
    pair->events[side] = events;
}

static void eject(Pump *self, Pair *pair, uint64_t handle, int reason)
{
    epoll_ctl(self->epoll_fd, EPOLL_CTL_DEL, pair->fd[0], NULL);
    epoll_ctl(self->epoll_fd, EPOLL_CTL_DEL, pair->fd[1], NULL);
    pair->state = EJECTED;
    pair->reason = reason;
    /* If the list cannot grow, Python still finds the pair when the pair is next asked about. */
    push_u64(&self->ejected, &self->ejected_len, &self->ejected_cap, handle);
    uint64_t one = 1;
    ssize_t ignored = write(self->notify_fd, &one, sizeof one);
    (void)ignored;
}

static void *copy_bytes(const void *data, size_t n)
{
    void *copy = malloc(n ? n : 1);
    if (copy)
        memcpy(copy, data, n);
    return copy;
}

/* Send out[0:n] to fd[to]; queue what the socket does not take and stop reading fd[from]. */
static int forward(Pump *self, Pair *pair, uint64_t handle, int from, const unsigned char *out, size_t n)
{
    int to = 1 - from;
    Direction *d = &pair->dir[from];
    d->relayed_bytes += n;
    size_t sent = 0;
    while (sent < n) {
        ssize_t got = send(pair->fd[to], out + sent, n - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (got > 0) {
            sent += (size_t)got;
            continue;
        }
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            /* Python writes these and meets the error itself, with its own reporting. */
            d->pending = copy_bytes(out + sent, n - sent);
            d->pending_len = d->pending ? n - sent : 0;
            eject(self, pair, handle, REASON_ERROR);
            return -1;
        }
        break;
    }
    if (sent < n) {
        d->pending = copy_bytes(out + sent, n - sent);
        if (!d->pending) {
            eject(self, pair, handle, REASON_ERROR);
            return -1;
        }
        d->pending_len = n - sent;
        watch(self, pair, handle, from, pair->events[from] & ~(uint32_t)EPOLLIN);
        watch(self, pair, handle, to, pair->events[to] | EPOLLOUT);
    }
    return 0;
}

static void readable(Pump *self, Pair *pair, uint64_t handle, int side)
{
    Direction *d = &pair->dir[side];
    if (d->pending_len)
        return; /* not watched for reading while its bytes wait; a stale event of the same batch */
    unsigned char *buf = self->scratch;
    size_t start = HEADROOM - d->held_len;
    memcpy(buf + start, d->held, d->held_len);
    ssize_t got;
    do {
        got = recv(pair->fd[side], buf + HEADROOM, self->read_size, MSG_DONTWAIT);
    } while (got < 0 && errno == EINTR);
    if (got == 0 || got < 0) {
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        eject(self, pair, handle, got == 0 ? REASON_EOF : REASON_ERROR);
        return;
    }
    d->read_bytes += (uint64_t)got;
    mark_dirty(self, pair, handle);
    size_t end = HEADROOM + (size_t)got, stop;
    d->held_len = 0;
    size_t n = rewrite(d, buf, start, end, &stop);
    if (stop < end) { /* copied first: forwarding may eject the pair, and these are Python's */
        d->leftover = copy_bytes(buf + stop, end - stop);
        d->leftover_len = d->leftover ? end - stop : 0;
    }
    if (n)
        forward(self, pair, handle, side, buf + start, n);
    if (pair->state == ACTIVE && stop < end)
        eject(self, pair, handle, d->leftover ? REASON_FRAME : REASON_ERROR);
}

/* fd[side] can take more: send what the other direction queued for it. */
static void writable(Pump *self, Pair *pair, uint64_t handle, int side)
{
    int from = 1 - side;
    Direction *d = &pair->dir[from];
    size_t sent = 0;
    while (sent < d->pending_len) {
        ssize_t got = send(pair->fd[side], d->pending + sent, d->pending_len - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (got > 0) {
            sent += (size_t)got;
            continue;
        }
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            memmove(d->pending, d->pending + sent, d->pending_len - sent);
            d->pending_len -= sent;
            eject(self, pair, handle, REASON_ERROR);
            return;
        }
        break;
    }
    if (sent < d->pending_len) {
        memmove(d->pending, d->pending + sent, d->pending_len - sent);
        d->pending_len -= sent;
        return;
    }
    free(d->pending);
    d->pending = NULL;
    d->pending_len = 0;
    watch(self, pair, handle, side, pair->events[side] & ~(uint32_t)EPOLLOUT);
    watch(self, pair, handle, from, pair->events[from] | EPOLLIN);
}

static void *run(void *arg)
{
    Pump *self = arg;
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(self->epoll_fd, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        pthread_mutex_lock(&self->lock);
        if (self->stopping) {
            pthread_mutex_unlock(&self->lock);
            break;
        }
        for (int k = 0; k < n; k++) {
            uint64_t data = events[k].data.u64;
            if (data == UINT64_MAX)
                continue; /* the wake-up descriptor: checked above */
            uint64_t handle = data >> 1;
            int side = (int)(data & 1);
            Pair *pair = pair_of(self, handle);
            if (!pair || pair->state != ACTIVE)
                continue; /* taken back or ejected since epoll_wait returned */
            uint32_t got = events[k].events;
            if (got & EPOLLOUT)
                writable(self, pair, handle, side);
            if (pair->state == ACTIVE && (got & EPOLLIN))
                readable(self, pair, handle, side);
            if (pair->state == ACTIVE && (got & (EPOLLERR | EPOLLHUP)))
                eject(self, pair, handle, REASON_ERROR);
        }
        pthread_mutex_unlock(&self->lock);
    }
    return NULL;
}

/* ---------------------------------------------------------------- Python: state tuples */

/* (remaining, mask, offset, in_message, held) -> Direction */
static int direction_from(PyObject *state, Direction *d)
{
    unsigned long long remaining;
    Py_buffer mask, held;
    unsigned offset;
    int in_message;
    if (!PyArg_ParseTuple(state, "Ky*Ipy*", &remaining, &mask, &offset, &in_message, &held))
        return -1;
    int ok = (mask.len == 0 || mask.len == 4) && offset < 4 && held.len < MAX_HELD &&
             (remaining == 0 || mask.len == 4);
    if (ok) {
        memset(d, 0, sizeof *d);
        d->remaining = remaining;
        if (mask.len)
            memcpy(d->mask, mask.buf, 4);
        d->offset = offset;
        d->in_message = in_message;
        memcpy(d->held, held.buf, (size_t)held.len);
        d->held_len = (unsigned)held.len;
    }
    PyBuffer_Release(&mask);
    PyBuffer_Release(&held);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "invalid rewriter state");
        return -1;
    }
    return 0;
}

static PyObject *state_of(const Direction *d)
{
    return Py_BuildValue("(Ky#INy#)", (unsigned long long)d->remaining, (const char *)d->mask,
                         (Py_ssize_t)(d->remaining ? 4 : 0), d->remaining ? d->offset : 0u, PyBool_FromLong(d->in_message),
                         (const char *)d->held, (Py_ssize_t)d->held_len);
}

/* ---------------------------------------------------------------- Python: the Pump type */

static void free_pair(Pair *pair)
{
    for (int side = 0; side < 2; side++) {
        free(pair->dir[side].pending);
        free(pair->dir[side].leftover);
    }
    free(pair);
}

static PyObject *Pump_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"read_size", NULL};
    Py_ssize_t read_size = 262144;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|n", keywords, &read_size))
        return NULL;
    if (read_size < 1024 || read_size > (64 << 20)) {
        PyErr_SetString(PyExc_ValueError, "read_size must be from 1 KiB to 64 MiB");
        return NULL;
    }
    Pump *self = (Pump *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->epoll_fd = self->notify_fd = self->wake_fd = -1;
    pthread_mutex_init(&self->lock, NULL);
    self->read_size = (size_t)read_size;
    self->scratch = malloc(HEADROOM + self->read_size);
    self->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    self->notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    self->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!self->scratch || self->epoll_fd < 0 || self->notify_fd < 0 || self->wake_fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(self);
        return NULL;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
    if (epoll_ctl(self->epoll_fd, EPOLL_CTL_ADD, self->wake_fd, &ev) < 0 ||
        pthread_create(&self->thread, NULL, run, self) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(self);
        return NULL;
    }
    self->thread_started = 1;
    return (PyObject *)self;
}

static void stop_thread(Pump *self)
{
    if (!self->thread_started)
        return;
    pthread_mutex_lock(&self->lock);
    self->stopping = 1;
    pthread_mutex_unlock(&self->lock);
    uint64_t one = 1;
    ssize_t ignored = write(self->wake_fd, &one, sizeof one);
    (void)ignored;
    Py_BEGIN_ALLOW_THREADS
    pthread_join(self->thread, NULL);
    Py_END_ALLOW_THREADS
    self->thread_started = 0;
}

static void Pump_dealloc(Pump *self)
{
    stop_thread(self);
    for (size_t slot = 0; slot < self->next_slot; slot++)
        if (self->pairs[slot])
            free_pair(self->pairs[slot]);
    free(self->pairs);
    free(self->gens);
    free(self->free_slots);
    free(self->ejected);
    free(self->dirty);
    free(self->scratch);
    if (self->epoll_fd >= 0)
        close(self->epoll_fd);
    if (self->notify_fd >= 0)
        close(self->notify_fd);
    if (self->wake_fd >= 0)
        close(self->wake_fd);
    pthread_mutex_destroy(&self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static void lock(Pump *self)
{
    if (pthread_mutex_trylock(&self->lock) == 0)
        return;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    Py_END_ALLOW_THREADS
}

static int grow_table(Pump *self)
{
    size_t capacity = self->capacity ? 2 * self->capacity : 256;
    Pair **pairs = realloc(self->pairs, capacity * sizeof(Pair *));
    if (!pairs)
        return -1;
    self->pairs = pairs;
    uint32_t *gens = realloc(self->gens, capacity * sizeof(uint32_t));
    if (!gens)
        return -1;
    self->gens = gens;
    size_t *free_slots = realloc(self->free_slots, capacity * sizeof(size_t));
    if (!free_slots)
        return -1;
    self->free_slots = free_slots;
    for (size_t slot = self->capacity; slot < capacity; slot++) {
        self->pairs[slot] = NULL;
        self->gens[slot] = 1;
    }
    self->capacity = capacity;
    return 0;
}

PyDoc_STRVAR(Pump_add_doc, "add(sender_fd, listener_fd, sender_state, listener_state) -> handle\n\n"
                           "Relay between the two sockets on the pump's thread (it never closes them). Each state is\n"
                           "(remaining, mask, offset, in_message, held) of the rewriter reading that leg.");

static PyObject *Pump_add(Pump *self, PyObject *args)
{
    int fds[2];
    PyObject *states[2];
    if (!PyArg_ParseTuple(args, "iiO!O!", &fds[0], &fds[1], &PyTuple_Type, &states[0], &PyTuple_Type, &states[1]))
        return NULL;
    Pair *pair = calloc(1, sizeof *pair);
    if (!pair)
        return PyErr_NoMemory();
    pair->fd[0] = pair->fd[1] = -1;
    for (int side = 0; side < 2; side++) {
        if (direction_from(states[side], &pair->dir[side]) < 0) {
            free_pair(pair);
            return NULL;
        }
    }
    for (int side = 0; side < 2; side++) {
        if (fcntl(fds[side], F_GETFD) < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            free_pair(pair);
            return NULL;
        }
        pair->fd[side] = fds[side];
    }
    lock(self);
    size_t slot;
    if (self->free_count) {
        slot = self->free_slots[--self->free_count];
    } else {
        if (self->next_slot == self->capacity && grow_table(self) < 0) {
            pthread_mutex_unlock(&self->lock);
            free_pair(pair);
            return PyErr_NoMemory();
        }
        slot = self->next_slot++;
    }
    self->pairs[slot] = pair;
    pair->state = ACTIVE;
    uint64_t handle = handle_of(self, slot);
    int failed = 0;
    for (int side = 0; side < 2 && !failed; side++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (handle << 1) | (uint64_t)side};
        pair->events[side] = EPOLLIN;
        failed = epoll_ctl(self->epoll_fd, EPOLL_CTL_ADD, pair->fd[side], &ev) < 0;
    }
    if (failed) {
        int saved = errno;
        epoll_ctl(self->epoll_fd, EPOLL_CTL_DEL, pair->fd[0], NULL);
        epoll_ctl(self->epoll_fd, EPOLL_CTL_DEL, pair->fd[1], NULL);
        self->pairs[slot] = NULL;
        self->gens[slot]++;
        self->free_slots[self->free_count++] = slot;
        pthread_mutex_unlock(&self->lock);
        free_pair(pair);
        errno = saved;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    self->active++;
    pthread_mutex_unlock(&self->lock);
    return PyLong_FromUnsignedLongLong(handle);
}

PyDoc_STRVAR(Pump_take_doc,
             "take(handle) -> (reason, sender, listener)\n\n"
             "Stop relaying the pair and give back everything the thread held. reason: 0 taken while\n"
             "relaying, 1 a frame for Python, 2 end of file, 3 socket error. Each side is (state, leftover,\n"
             "pending, read_bytes, relayed_bytes): leftover is input from that leg not yet rewritten,\n"
             "pending rewritten bytes from that leg not yet sent to the other.");

static PyObject *Pump_take(Pump *self, PyObject *arg)
{
    unsigned long long handle = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred())
        return NULL;
    lock(self);
    Pair *pair = pair_of(self, handle);
    if (!pair) {
        pthread_mutex_unlock(&self->lock);
        PyErr_SetString(PyExc_KeyError, "no such pair");
        return NULL;
    }
    if (pair->state == ACTIVE) {
        epoll_ctl(self->epoll_fd, EPOLL_CTL_DEL, pair->fd[0], NULL);
        epoll_ctl(self->epoll_fd, EPOLL_CTL_DEL, pair->fd[1], NULL);
    }
    size_t slot = (size_t)(handle & 0xFFFFFFFFu);
    self->pairs[slot] = NULL;
    self->gens[slot]++;
    self->free_slots[self->free_count++] = slot;
    self->active--;
    pthread_mutex_unlock(&self->lock);

    PyObject *sides[2] = {NULL, NULL};
    for (int side = 0; side < 2; side++) {
        Direction *d = &pair->dir[side];
        PyObject *state = state_of(d);
        if (!state)
            break;
        sides[side] = Py_BuildValue("(Ny#y#KK)", state, d->leftover ? d->leftover : "", (Py_ssize_t)d->leftover_len,
                                    d->pending ? d->pending : "", (Py_ssize_t)d->pending_len,
                                    (unsigned long long)d->read_bytes, (unsigned long long)d->relayed_bytes);
        if (!sides[side])
            break;
    }
    int reason = pair->reason;
    free_pair(pair);
    if (!sides[0] || !sides[1]) {
        Py_XDECREF(sides[0]);
        Py_XDECREF(sides[1]);
        return NULL;
    }
    return Py_BuildValue("(iNN)", reason, sides[0], sides[1]);
}

PyDoc_STRVAR(Pump_ejected_doc, "ejected() -> list of handles the thread stopped relaying since the last call");

static PyObject *Pump_ejected(Pump *self, PyObject *Py_UNUSED(ignored))
{
    uint64_t drained;
    ssize_t ignored_read = read(self->notify_fd, &drained, sizeof drained);
    (void)ignored_read;
    lock(self);
    PyObject *result = PyList_New((Py_ssize_t)self->ejected_len);
    for (size_t k = 0; result && k < self->ejected_len; k++) {
        PyObject *handle = PyLong_FromUnsignedLongLong(self->ejected[k]);
        if (!handle) {
            Py_CLEAR(result);
            break;
        }
        PyList_SET_ITEM(result, (Py_ssize_t)k, handle);
    }
    if (result)
        self->ejected_len = 0;
    pthread_mutex_unlock(&self->lock);
    return result;
}

PyDoc_STRVAR(Pump_collect_doc, "collect() -> [(handle, sender read, listener read, sender relayed, listener relayed)]\n\n"
                               "The byte counts of pairs that moved bytes since the last call, reset.");

static PyObject *Pump_collect(Pump *self, PyObject *Py_UNUSED(ignored))
{
    lock(self);
    PyObject *result = PyList_New(0);
    for (size_t k = 0; result && k < self->dirty_len; k++) {
        Pair *pair = pair_of(self, self->dirty[k]);
        if (!pair)
            continue;
        PyObject *item = Py_BuildValue("(KKKKK)", (unsigned long long)self->dirty[k],
                                       (unsigned long long)pair->dir[0].read_bytes,
                                       (unsigned long long)pair->dir[1].read_bytes,
                                       (unsigned long long)pair->dir[0].relayed_bytes,
                                       (unsigned long long)pair->dir[1].relayed_bytes);
        if (!item || PyList_Append(result, item) < 0) {
            Py_XDECREF(item);
            Py_CLEAR(result);
            break;
        }
        Py_DECREF(item);
        pair->dirty = 0;
        pair->dir[0].read_bytes = pair->dir[1].read_bytes = 0;
        pair->dir[0].relayed_bytes = pair->dir[1].relayed_bytes = 0;
    }
    if (result)
        self->dirty_len = 0;
    pthread_mutex_unlock(&self->lock);
    return result;
}

PyDoc_STRVAR(Pump_buffered_doc, "buffered(handle) -> bytes the thread holds for the pair");

static PyObject *Pump_buffered(Pump *self, PyObject *arg)
{
    unsigned long long handle = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred())
        return NULL;
    lock(self);
    Pair *pair = pair_of(self, handle);
    size_t total = 0;
    if (pair)
        for (int side = 0; side < 2; side++)
            total += pair->dir[side].pending_len + pair->dir[side].leftover_len + pair->dir[side].held_len;
    pthread_mutex_unlock(&self->lock);
    if (!pair) {
        PyErr_SetString(PyExc_KeyError, "no such pair");
        return NULL;
    }
    return PyLong_FromSize_t(total);
}

static PyObject *Pump_fileno(Pump *self, PyObject *Py_UNUSED(ignored)) { return PyLong_FromLong(self->notify_fd); }

static PyObject *Pump_len(Pump *self, PyObject *Py_UNUSED(ignored))
{
    lock(self);
    size_t active = self->active;
    pthread_mutex_unlock(&self->lock);
    return PyLong_FromSize_t(active);
}

static PyMethodDef Pump_methods[] = {
    {"add", (PyCFunction)Pump_add, METH_VARARGS, Pump_add_doc},
    {"take", (PyCFunction)Pump_take, METH_O, Pump_take_doc},
    {"ejected", (PyCFunction)Pump_ejected, METH_NOARGS, Pump_ejected_doc},
    {"collect", (PyCFunction)Pump_collect, METH_NOARGS, Pump_collect_doc},
    {"buffered", (PyCFunction)Pump_buffered, METH_O, Pump_buffered_doc},
    {"fileno", (PyCFunction)Pump_fileno, METH_NOARGS, "the descriptor that turns readable when pairs are ejected"},
    {"pairs", (PyCFunction)Pump_len, METH_NOARGS, "how many pairs the pump holds (relaying or ejected)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PumpType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "relay._splice.Pump",
    .tp_basicsize = sizeof(Pump),
    .tp_dealloc = (destructor)Pump_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = PyDoc_STR("Pump(read_size=262144): a thread relaying the data frames of spliced pairs"),
    .tp_methods = Pump_methods,
    .tp_new = Pump_new,
};

/* ---------------------------------------------------------------- Python: the rewriter alone, for tests */

PyDoc_STRVAR(rewrite_doc, "rewrite(state, data) -> (output, stop, state)\n\n"
                          "What the thread does to one read: rewrite data (after the state's held bytes);\n"
                          "stop is the index into held + data of the first frame left for Python, or -1.");

static PyObject *module_rewrite(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *state;
    Py_buffer data;
    Direction d;
    if (!PyArg_ParseTuple(args, "O!y*", &PyTuple_Type, &state, &data))
        return NULL;
    if (direction_from(state, &d) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    size_t total = HEADROOM + (size_t)data.len;
    unsigned char *buf = malloc(total ? total : 1);
    if (!buf) {
        PyBuffer_Release(&data);
        return PyErr_NoMemory();
    }
    size_t start = HEADROOM - d.held_len;
    memcpy(buf + start, d.held, d.held_len);
    memcpy(buf + HEADROOM, data.buf, (size_t)data.len);
    PyBuffer_Release(&data);
    d.held_len = 0;
    size_t stop;
    size_t n = rewrite(&d, buf, start, total, &stop);
    Py_ssize_t stop_index = stop < total ? (Py_ssize_t)(stop - start) : -1;
    if (stop < total)
        d.held_len = 0;
    PyObject *result = Py_BuildValue("(y#nN)", (const char *)buf + start, (Py_ssize_t)n, stop_index, state_of(&d));
    free(buf);
    return result;
}

static PyMethodDef module_methods[] = {
    {"rewrite", module_rewrite, METH_VARARGS, rewrite_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "relay._splice", "The splice's data frames on a thread of their own.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__splice(void)
{
    if (PyType_Ready(&PumpType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (!module)
        return NULL;
    Py_INCREF(&PumpType);
    if (PyModule_AddObject(module, "Pump", (PyObject *)&PumpType) < 0) {
        Py_DECREF(&PumpType);
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddIntConstant(module, "HEADROOM", HEADROOM) < 0 ||
        PyModule_AddIntConstant(module, "MAX_HELD", MAX_HELD) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
