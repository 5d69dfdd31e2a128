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
        unsigned seven = b1 & 0x7F;
        size_t header = seven < 126 ? 6 : seven == 126 ? 8 : 14; /* with the masking key */
        if (end - pos < header)
            break;
        uint64_t length = 0;
        if (frame_length(buf + pos, header, &length) < 0 || (length >> 63)) {
            *stop = pos; /* not the shortest form, or the top bit set: Python's rewriter fails the leg */
            return written - start;
        }
        memcpy(state->mask, buf + pos + header - 4, 4);
        state->offset = 0;
        state->in_message = !(b0 & 0x80);
        written += put_header(buf + written, b0, 0, length); /* unmasked, in the shortest form */
        pos += header;
        state->remaining = length;
    }
    state->held_len = (unsigned)(end - pos);
    memcpy(state->held, buf + pos, state->held_len);
    return written - start;
}
