/* The native splice's thread (see _splice_pump.h and, for why, _splice.c). */
#define _GNU_SOURCE
#include "_splice_pump.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_EVENTS 256
#define WAKE_DATA UINT64_MAX

/* ---------------------------------------------------------------- lists and the pair table */

/* Make room for at least `wanted` handles. */
static int list_reserve(HandleList *list, size_t wanted)
{
    if (wanted <= list->cap)
        return 0;
    size_t cap = list->cap ? list->cap : 64;
    while (cap < wanted)
        cap *= 2;
    uint64_t *grown = realloc(list->items, cap * sizeof(uint64_t));
    if (!grown)
        return -1;
    list->items = grown;
    list->cap = cap;
    return 0;
}

static int list_push(HandleList *list, uint64_t handle)
{
    if (list_reserve(list, list->len + 1) < 0)
        return -1;
    list->items[list->len++] = handle;
    return 0;
}

Pair *pump_find(PumpCore *pump, uint64_t handle)
{
    size_t slot = (size_t)(handle & 0xFFFFFFFFu);
    if (slot >= pump->next_slot || pump->gens[slot] != (uint32_t)(handle >> 32))
        return NULL;
    return pump->pairs[slot];
}

static int grow_table(PumpCore *pump)
{
    size_t capacity = pump->capacity ? 2 * pump->capacity : 256;
    Pair **pairs = realloc(pump->pairs, capacity * sizeof(Pair *));
    if (!pairs)
        return -1;
    pump->pairs = pairs;
    uint32_t *gens = realloc(pump->gens, capacity * sizeof(uint32_t));
    if (!gens)
        return -1;
    pump->gens = gens;
    size_t *free_slots = realloc(pump->free_slots, capacity * sizeof(size_t));
    if (!free_slots)
        return -1;
    pump->free_slots = free_slots;
    for (size_t slot = pump->capacity; slot < capacity; slot++) {
        pump->pairs[slot] = NULL;
        pump->gens[slot] = 1;
    }
    pump->capacity = capacity;
    return 0;
}

uint32_t next_generation(uint32_t gen)
{
    /* 31 bits: epoll's data is the handle shifted left by one (the side in bit 0), so a 32nd bit would be
       lost and the pair's events would no longer find it. 0 is never a generation. */
    uint32_t next = (gen + 1) & GENERATION_MASK;
    return next ? next : 1;
}

static void forget_slot(PumpCore *pump, size_t slot)
{
    pump->pairs[slot] = NULL;
    pump->gens[slot] = next_generation(pump->gens[slot]); /* the old handle names nothing from now on */
    pump->free_slots[pump->free_count++] = slot;
}

int pump_add(PumpCore *pump, Pair *pair, uint64_t *handle)
{
    /* Room for every pair still in the table to be ejected once: eject() then never needs memory, and
       no pair can be stopped without Python being told. */
    if (list_reserve(&pump->ejected, pump->ejected.len + pump->active + 1) < 0) {
        errno = ENOMEM;
        return -1;
    }
    size_t slot;
    if (pump->free_count) {
        slot = pump->free_slots[--pump->free_count];
    } else {
        if (pump->next_slot == pump->capacity && grow_table(pump) < 0) {
            errno = ENOMEM;
            return -1;
        }
        slot = pump->next_slot++;
    }
    *handle = ((uint64_t)pump->gens[slot] << 32) | slot;
    for (int side = 0; side < 2; side++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (*handle << 1) | (uint64_t)side};
        pair->events[side] = EPOLLIN;
        if (epoll_ctl(pump->epoll_fd, EPOLL_CTL_ADD, pair->fd[side], &ev) < 0) {
            int saved = errno;
            if (side)
                epoll_ctl(pump->epoll_fd, EPOLL_CTL_DEL, pair->fd[0], NULL);
            forget_slot(pump, slot);
            errno = saved;
            return -1;
        }
    }
    pair->state = PAIR_ACTIVE;
    pump->pairs[slot] = pair;
    pump->active++;
    return 0;
}

Pair *pump_remove(PumpCore *pump, uint64_t handle)
{
    Pair *pair = pump_find(pump, handle);
    if (!pair)
        return NULL;
    if (pair->state == PAIR_ACTIVE) {
        epoll_ctl(pump->epoll_fd, EPOLL_CTL_DEL, pair->fd[0], NULL);
        epoll_ctl(pump->epoll_fd, EPOLL_CTL_DEL, pair->fd[1], NULL);
    }
    forget_slot(pump, (size_t)(handle & 0xFFFFFFFFu));
    pump->active--;
    return pair;
}

void pair_free(Pair *pair)
{
    for (int side = 0; side < 2; side++) {
        free(pair->dir[side].pending);
        free(pair->dir[side].leftover);
    }
    free(pair);
}

/* ---------------------------------------------------------------- the thread's work */

static void watch(PumpCore *pump, Pair *pair, uint64_t handle, int side, uint32_t events)
{
    if (pair->events[side] == events)
        return;
    struct epoll_event ev = {.events = events, .data.u64 = (handle << 1) | (uint64_t)side};
    epoll_ctl(pump->epoll_fd, EPOLL_CTL_MOD, pair->fd[side], &ev);
    pair->events[side] = events;
}

/* Stop watching the pair and tell Python, which takes it back. */
static void eject(PumpCore *pump, Pair *pair, uint64_t handle, int reason)
{
    epoll_ctl(pump->epoll_fd, EPOLL_CTL_DEL, pair->fd[0], NULL);
    epoll_ctl(pump->epoll_fd, EPOLL_CTL_DEL, pair->fd[1], NULL);
    pair->state = PAIR_EJECTED;
    pair->reason = reason;
    list_push(&pump->ejected, handle); /* never fails: pump_add reserved the room */
    uint64_t one = 1;
    ssize_t ignored = write(pump->notify_fd, &one, sizeof one);
    (void)ignored;
}

static char *copy_bytes(const void *data, size_t n)
{
    char *copy = malloc(n ? n : 1);
    if (copy)
        memcpy(copy, data, n);
    return copy;
}

/* Send what fd takes of data[0:n] without blocking; *sent says how much. -1 on a socket error. */
static int send_some(int fd, const char *data, size_t n, size_t *sent)
{
    *sent = 0;
    while (*sent < n) {
        ssize_t got = send(fd, data + *sent, n - *sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (got > 0)
            *sent += (size_t)got;
        else if (got < 0 && errno == EINTR)
            continue;
        else if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        else
            return -1;
    }
    return 0;
}

/* Send out[0:n], read from fd[from], to the other leg; queue the rest and stop reading fd[from]. */
static void forward(PumpCore *pump, Pair *pair, uint64_t handle, int from, const unsigned char *out, size_t n)
{
    int to = 1 - from;
    Direction *d = &pair->dir[from];
    d->relayed_bytes += n;
    size_t sent;
    int failed = send_some(pair->fd[to], (const char *)out, n, &sent);
    if (sent == n)
        return;
    /* Python writes what is left: after an error it meets the error itself, with its own reporting. */
    d->pending = copy_bytes(out + sent, n - sent);
    d->pending_len = d->pending ? n - sent : 0;
    if (!d->pending) {
        eject(pump, pair, handle, REASON_NOMEM);
        return;
    }
    if (failed) {
        eject(pump, pair, handle, REASON_ERROR);
        return;
    }
    watch(pump, pair, handle, from, pair->events[from] & ~(uint32_t)EPOLLIN);
    watch(pump, pair, handle, to, pair->events[to] | EPOLLOUT);
}

static void readable(PumpCore *pump, Pair *pair, uint64_t handle, int side)
{
    Direction *d = &pair->dir[side];
    if (d->pending_len)
        return; /* not watched for reading while its bytes wait: a stale event of the same batch */
    FrameState *frames = &d->frames;
    unsigned char *buf = pump->scratch;
    size_t start = SPLICE_HEADROOM - frames->held_len;
    memcpy(buf + start, frames->held, frames->held_len);
    ssize_t got;
    do {
        got = recv(pair->fd[side], buf + SPLICE_HEADROOM, pump->read_size, MSG_DONTWAIT);
    } while (got < 0 && errno == EINTR);
    if (got <= 0) {
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        eject(pump, pair, handle, got == 0 ? REASON_EOF : REASON_ERROR); /* held bytes stay in the state */
        return;
    }
    d->read_bytes += (uint64_t)got;
    if (!pair->dirty && list_push(&pump->dirty, handle) == 0)
        pair->dirty = 1;
    size_t end = SPLICE_HEADROOM + (size_t)got, stop;
    frames->held_len = 0;
    size_t n = splice_rewrite(frames, buf, start, end, &stop);
    int lost = 0;
    if (stop < end) { /* copied first: forwarding may eject the pair, and these bytes are Python's */
        d->leftover = copy_bytes(buf + stop, end - stop);
        d->leftover_len = d->leftover ? end - stop : 0;
        lost = !d->leftover;
    }
    if (n)
        forward(pump, pair, handle, side, buf + start, n);
    if (pair->state == PAIR_ACTIVE && stop < end)
        eject(pump, pair, handle, lost ? REASON_NOMEM : REASON_FRAME);
    else if (lost)
        pair->reason = REASON_NOMEM; /* ejected while forwarding: the lost bytes still end the pair */
}

/* fd[side] can take more: send what the other direction queued for it, then read that leg again. */
static void writable(PumpCore *pump, Pair *pair, uint64_t handle, int side)
{
    int from = 1 - side;
    Direction *d = &pair->dir[from];
    size_t sent;
    int failed = send_some(pair->fd[side], d->pending, d->pending_len, &sent);
    if (sent < d->pending_len) {
        memmove(d->pending, d->pending + sent, d->pending_len - sent);
        d->pending_len -= sent;
        if (failed)
            eject(pump, pair, handle, REASON_ERROR);
        return;
    }
    free(d->pending);
    d->pending = NULL;
    d->pending_len = 0;
    watch(pump, pair, handle, side, pair->events[side] & ~(uint32_t)EPOLLOUT);
    watch(pump, pair, handle, from, pair->events[from] | EPOLLIN);
}

static void *run(void *arg)
{
    PumpCore *pump = arg;
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(pump->epoll_fd, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        pthread_mutex_lock(&pump->lock);
        if (pump->stopping) {
            pthread_mutex_unlock(&pump->lock);
            break;
        }
        for (int k = 0; k < n; k++) {
            uint64_t data = events[k].data.u64;
            if (data == WAKE_DATA)
                continue;
            uint64_t handle = data >> 1;
            int side = (int)(data & 1);
            Pair *pair = pump_find(pump, handle);
            if (!pair || pair->state != PAIR_ACTIVE)
                continue; /* taken back or ejected since epoll_wait returned */
            uint32_t got = events[k].events;
            if (got & EPOLLOUT)
                writable(pump, pair, handle, side);
            if (pair->state == PAIR_ACTIVE && (got & EPOLLIN))
                readable(pump, pair, handle, side);
            if (pair->state == PAIR_ACTIVE && (got & (EPOLLERR | EPOLLHUP)))
                eject(pump, pair, handle, REASON_ERROR);
        }
        pthread_mutex_unlock(&pump->lock);
    }
    return NULL;
}

/* ---------------------------------------------------------------- start and stop */

int pump_open(PumpCore *pump, size_t read_size)
{
    memset(pump, 0, sizeof *pump);
    pump->epoll_fd = pump->notify_fd = pump->wake_fd = -1;
    pthread_mutex_init(&pump->lock, NULL);
    pump->read_size = read_size;
    /* Touched now, as the Python splice's shared read buffer is when it is made: a fixed cost of the
       process, not of whichever pair reads first. */
    pump->scratch = malloc(SPLICE_HEADROOM + read_size);
    if (!pump->scratch) {
        errno = ENOMEM;
        return -1;
    }
    memset(pump->scratch, 0, SPLICE_HEADROOM + read_size);
    pump->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    pump->notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pump->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (pump->epoll_fd < 0 || pump->notify_fd < 0 || pump->wake_fd < 0)
        return -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = WAKE_DATA};
    if (epoll_ctl(pump->epoll_fd, EPOLL_CTL_ADD, pump->wake_fd, &ev) < 0)
        return -1;
    int failed = pthread_create(&pump->thread, NULL, run, pump);
    if (failed) {
        errno = failed;
        return -1;
    }
    pump->thread_started = 1;
    return 0;
}

void pump_close(PumpCore *pump)
{
    if (pump->thread_started) {
        pthread_mutex_lock(&pump->lock);
        pump->stopping = 1;
        pthread_mutex_unlock(&pump->lock);
        uint64_t one = 1;
        ssize_t ignored = write(pump->wake_fd, &one, sizeof one);
        (void)ignored;
        pthread_join(pump->thread, NULL);
        pump->thread_started = 0;
    }
    for (size_t slot = 0; slot < pump->next_slot; slot++)
        if (pump->pairs[slot])
            pair_free(pump->pairs[slot]);
    free(pump->pairs);
    free(pump->gens);
    free(pump->free_slots);
    free(pump->ejected.items);
    free(pump->dirty.items);
    free(pump->scratch);
    int fds[3] = {pump->epoll_fd, pump->notify_fd, pump->wake_fd};
    for (int k = 0; k < 3; k++)
        if (fds[k] >= 0)
            close(fds[k]);
    pthread_mutex_destroy(&pump->lock);
    memset(pump, 0, sizeof *pump);
}
