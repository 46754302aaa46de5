/* SHA-256 (FIPS 180-4) and HMAC-SHA256: model hashes in image parameters, message signing. */
#ifndef SD_SHA256_H
#define SD_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct sd_sha256 {
	uint32_t h[8];
	uint64_t length;
	unsigned char block[64];
	size_t used;
} sd_sha256;

void sd_sha256_init(sd_sha256 *c);
void sd_sha256_update(sd_sha256 *c, const void *data, size_t n);
void sd_sha256_final(sd_sha256 *c, unsigned char digest[32]);
void sd_hmac_sha256(const void *key, size_t klen, const void *msg, size_t mlen, unsigned char digest[32]);

#endif
