/* SPDX-License-Identifier: MIT */
/*
 * siphash.c - SipHash-2-4 and SipHash-1-3 (Aumasson, Bernstein 2012), keyed PRFs.
 *
 * Used where an attacker must not predict or steer an output: initial
 * sequence numbers (RFC 6528 §3: F(localip, localport, remoteip,
 * remoteport, secretkey)) and SYN cookies with SipHash-2-4; the
 * connection and static route tables with SipHash-1-3.
 */
#include <endian.h>
#include <stdint.h>
#include <string.h>

#include "tcp.h"

static inline uint64_t rotl(uint64_t x, int b)
{
	return (x << b) | (x >> (64 - b));
}

#define SIPROUND(v0, v1, v2, v3)                                  \
	do {                                                      \
		v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32); \
		v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;            \
		v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;            \
		v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32); \
	} while (0)

static inline uint64_t load_le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

/* SipHash-c-d: c compression rounds per 8-byte word, d finalization
 * rounds (the paper's §2). */
static inline uint64_t siphash_cd(const uint64_t key[2], const void *data, size_t len,
				  int c, int d)
{
	const uint8_t *p = data;
	uint64_t v0 = 0x736f6d6570736575ULL ^ key[0];
	uint64_t v1 = 0x646f72616e646f6dULL ^ key[1];
	uint64_t v2 = 0x6c7967656e657261ULL ^ key[0];
	uint64_t v3 = 0x7465646279746573ULL ^ key[1];
	uint64_t b = (uint64_t)len << 56, m;
	size_t left = len & 7, i;
	int r;

	for (i = 0; i + 8 <= len; i += 8) {
		m = load_le64(p + i);
		v3 ^= m;
		for (r = 0; r < c; r++)
			SIPROUND(v0, v1, v2, v3);
		v0 ^= m;
	}
	p += len - left;
	for (i = 0; i < left; i++)
		b |= (uint64_t)p[i] << (8 * i);
	v3 ^= b;
	for (r = 0; r < c; r++)
		SIPROUND(v0, v1, v2, v3);
	v0 ^= b;
	v2 ^= 0xff;
	for (r = 0; r < d; r++)
		SIPROUND(v0, v1, v2, v3);
	return v0 ^ v1 ^ v2 ^ v3;
}

/* For outputs an attacker must not predict: ISNs, SYN cookies. */
uint64_t siphash24(const uint64_t key[2], const void *data, size_t len)
{
	return siphash_cd(key, data, len, 2, 4);
}

/* For hash tables (the connection and static route tables), where only
 * steering many keys into one bucket must be out of reach: SipHash-1-3,
 * as CPython's str hash and Rust's HashMap use. */
uint64_t siphash13(const uint64_t key[2], const void *data, size_t len)
{
	return siphash_cd(key, data, len, 1, 3);
}
