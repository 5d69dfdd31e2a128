/* The native splice's frame rewriter (see _splice_frames.h). */
#include "_splice_frames.h"

#include <string.h>

void unmask_move(unsigned char *dst, const unsigned char *src, size_t n, const unsigned char key[4],
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

/* Whether the frame starting with b0, b1 is one the thread relays, given the fragment state. */
static int relayable(const FrameState *state, unsigned char b0, unsigned char b1)
{
    unsigned opcode = b0 & 0x0F;
    if (!(b1 & 0x80) || (b0 & 0x70) || opcode > 2)
        return 0; /* unmasked, reserved bits, control or reserved opcode */
    if (opcode == 0)
        return state->in_message; /* a continuation needs an open message */
    return !state->in_message;    /* a new message needs the last one finished */
}

size_t splice_rewrite(FrameState *state, unsigned char *buf, size_t start, size_t end, size_t *stop)
{
    size_t pos = start, written = start;
    *stop = end;
    while (pos < end) {
        if (state->remaining) {
            uint64_t available = end - pos;
            size_t take = (size_t)(state->remaining < available ? state->remaining : available);
            unmask_move(buf + written, buf + pos, take, state->mask, state->offset);
            written += take;
            pos += take;
            state->offset = (unsigned)((state->offset + take) & 3);
            state->remaining -= take;
            continue;
        }
        if (end - pos < 2)
            break;
        unsigned char b0 = buf[pos], b1 = buf[pos + 1];
        if (!relayable(state, b0, b1)) {
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
            if (length < 126) { /* not the shortest form: Python's rewriter fails the leg */
                *stop = pos;
                return written - start;
            }
        } else if (length == 127) {
            header = 14;
            if (end - pos < header)
                break;
            length = 0;
            for (int k = 0; k < 8; k++)
                length = (length << 8) | buf[pos + 2 + k];
            if ((length >> 63) || length < 65536) { /* top bit set, or not the shortest form */
                *stop = pos;
                return written - start;
            }
        } else if (end - pos < header) {
            break;
        }
        memcpy(state->mask, buf + pos + header - 4, 4);
        state->offset = 0;
        state->in_message = !(b0 & 0x80);
        /* The unmasked header: the same first byte, the shortest length form, no mask bit. */
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
        state->remaining = length;
    }
    state->held_len = (unsigned)(end - pos);
    memcpy(state->held, buf + pos, state->held_len);
    return written - start;
}
