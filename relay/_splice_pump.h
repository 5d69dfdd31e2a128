/*
 * The native splice's thread: pairs of sockets, relayed with epoll, without the interpreter.
 *
 * Plain C (no Python API): _splice.c wraps it for Python and owns the locking around its calls.
 * Everything in a PumpCore is guarded by its lock, which the thread holds while it handles a batch of
 * events and never while it waits.
 */
#ifndef RELAY_SPLICE_PUMP_H
#define RELAY_SPLICE_PUMP_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "_splice_frames.h"

enum { PAIR_ACTIVE = 1, PAIR_EJECTED = 2 };
/* REASON_NOMEM: bytes the thread had to keep for Python could not be copied (out of memory); the stream
   can no longer be continued and Python drops both legs. */
enum { REASON_TAKEN = 0, REASON_FRAME = 1, REASON_EOF = 2, REASON_ERROR = 3, REASON_NOMEM = 4 };

/* Bytes read from one leg and rewritten for the other. */
typedef struct {
    FrameState frames;
    char *pending; /* rewritten bytes the other leg's socket did not take */
    size_t pending_len;
    char *leftover; /* input from the first frame the thread does not relay, for Python */
    size_t leftover_len;
    uint64_t read_bytes;    /* read from the leg since the last collect */
    uint64_t relayed_bytes; /* rewritten bytes sent or queued for the other leg, idem */
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
    uint64_t *items;
    size_t len, cap;
} HandleList;

typedef struct {
    int epoll_fd;
    int notify_fd; /* readable for Python when the thread ejected pairs */
    int wake_fd;   /* readable for the thread when it must stop */
    size_t read_size;
    unsigned char *scratch;
    pthread_t thread;
    int thread_started;
    int stopping;
    pthread_mutex_t lock;
    Pair **pairs; /* by slot; a handle is (generation << 32) | slot, the generation 31 bits */
    uint32_t *gens;
    size_t capacity, next_slot;
    size_t *free_slots;
    size_t free_count;
    HandleList ejected; /* given back by the thread, not yet reported to Python */
    HandleList dirty;   /* pairs whose counters moved since the last collect */
    size_t active;
} PumpCore;

#define GENERATION_MASK 0x7FFFFFFFu

/* The generation a slot gets when its pair leaves: never 0, and within GENERATION_MASK. */
uint32_t next_generation(uint32_t gen);
/* Open the descriptors and start the thread; 0, or -1 with errno set. */
int pump_open(PumpCore *pump, size_t read_size);
/* Stop the thread and free everything (the legs' sockets stay open). */
void pump_close(PumpCore *pump);
/* With the lock held: start relaying pair (its fds and states filled in); 0, or -1 with errno set. */
int pump_add(PumpCore *pump, Pair *pair, uint64_t *handle);
/* With the lock held: the pair of a handle, or NULL when taken back (or never added). */
Pair *pump_find(PumpCore *pump, uint64_t handle);
/* With the lock held: stop relaying the pair and forget its handle; the caller frees the pair. */
Pair *pump_remove(PumpCore *pump, uint64_t handle);
void pair_free(Pair *pair);

#endif
