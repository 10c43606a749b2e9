/* SPDX-License-Identifier: MIT */
/*
 * http_token.h - the byte-level pieces of HTTP/1.1 syntax that the fast
 * path's request parser (http_fast.c) and hand-back's framing
 * (http_frame.c) both need.  Bounded by the lengths given, never by a
 * terminator in the input.
 */
#ifndef SPECLOOP_HTTP_TOKEN_H
#define SPECLOOP_HTTP_TOKEN_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

static inline int http_lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* a hex digit's value (percent-encoding, chunk sizes), -1 if not one */
static inline int http_hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (uint8_t)http_lower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* p[0, len) equals the lower-case `name`, ignoring case (field names,
 * RFC 9110 §5.1) */
static inline bool http_name_is(const uint8_t *p, uint32_t len, const char *name)
{
	uint32_t i;

	for (i = 0; i < len; i++)
		if (!name[i] || http_lower(p[i]) != name[i])
			return false;
	return name[len] == 0;
}

/* RFC 9110 §5.6.2 token characters */
static inline bool http_is_tchar(uint8_t c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* 1*DIGIT into *out (RFC 9110 §8.6's Content-Length, a range's bounds):
 * false if empty, anything but digits (no signs, spaces or lists), or
 * more than 18 digits */
static inline bool http_parse_u64(const uint8_t *p, uint32_t len, uint64_t *out)
{
	uint64_t v = 0;
	uint32_t i;

	if (!len || len > 18)
		return false;
	for (i = 0; i < len; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(p[i] - '0');
	}
	*out = v;
	return true;
}

/* One field line "name: value" (RFC 9112 §5) at p[0, len), without its
 * CRLF: the name's length and the value without surrounding whitespace.
 * false for obs-fold, whitespace before the colon, a bad name, or control
 * bytes in the value. */
static inline bool http_split_field(const uint8_t *p, uint32_t len, uint32_t *nl,
				    const uint8_t **v, uint32_t *vl)
{
	uint32_t colon, s, e, k;

	for (colon = 0; colon < len && http_is_tchar(p[colon]); colon++)
		;
	if (colon == 0 || colon >= len || p[colon] != ':')
		return false;
	for (s = colon + 1; s < len && (p[s] == ' ' || p[s] == '\t'); s++)
		;
	for (e = len; e > s && (p[e - 1] == ' ' || p[e - 1] == '\t'); e--)
		;
	for (k = s; k < e; k++)
		if ((p[k] < 0x20 && p[k] != '\t') || p[k] == 0x7f)
			return false;
	*nl = colon;
	*v = p + s;
	*vl = e - s;
	return true;
}

/*
 * Calls fn for each element of a comma-separated list (RFC 9110 §5.6.1),
 * trimmed; returns how many there were.
 */
static inline uint32_t http_each_token(const uint8_t *p, uint32_t len,
				       void (*fn)(void *arg, const uint8_t *t, uint32_t tl), void *arg)
{
	uint32_t i = 0, n = 0;

	while (i < len) {
		uint32_t s, e;

		while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == ','))
			i++;
		s = i;
		while (i < len && p[i] != ',')
			i++;
		e = i;
		while (e > s && (p[e - 1] == ' ' || p[e - 1] == '\t'))
			e--;
		if (e > s) {
			fn(arg, p + s, e - s);
			n++;
		}
	}
	return n;
}

/* the Connection tokens (RFC 9110 §7.6.1) either side acts on */
struct http_conn_tokens {
	bool close, keepalive, upgrade;
};

static inline void http_conn_token(void *arg, const uint8_t *t, uint32_t tl)
{
	struct http_conn_tokens *ct = arg;

	if (http_name_is(t, tl, "close"))
		ct->close = true;
	else if (http_name_is(t, tl, "keep-alive"))
		ct->keepalive = true;
	else if (http_name_is(t, tl, "upgrade"))
		ct->upgrade = true;
}

#endif /* SPECLOOP_HTTP_TOKEN_H */
