/* Compress a message with zlib, decompress it, and say what happened. */
#include <stdio.h>
#include <string.h>
#include <zlib.h>

int main(void) {
    const char *msg = "a library built from source, linked by a program built from source";
    unsigned char packed[256], unpacked[256];
    uLongf packed_len = sizeof packed, unpacked_len = sizeof unpacked;
    if (compress(packed, &packed_len, (const Bytef *)msg, strlen(msg) + 1) != Z_OK) return 1;
    if (uncompress(unpacked, &unpacked_len, packed, packed_len) != Z_OK) return 2;
    if (strcmp((const char *)unpacked, msg) != 0) return 3;
    printf("zlib %s: %lu bytes -> %lu -> %lu: round trip ok\n", zlibVersion(),
           (unsigned long)strlen(msg) + 1, (unsigned long)packed_len, (unsigned long)unpacked_len);
    return 0;
}
