/* Strict JSON parser (see json.h). Recursive descent; depth is bounded by SD_JSON_MAX_DEPTH. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "json.h"

typedef struct parser {
	const unsigned char *s;
	size_t len, pos;
	char *err;
	size_t errsize;
	int failed;
	size_t nodes, max_nodes;
} parser;

static int fail(parser *p, const char *what)
{
	if (!p->failed) {
		p->failed = 1;
		if (p->errsize) snprintf(p->err, p->errsize, "invalid JSON at byte %zu: %s", p->pos, what);
	}
	return -1;
}

static void skip_ws(parser *p)
{
	while (p->pos < p->len) {
		unsigned char c = p->s[p->pos];
		if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
		p->pos++;
	}
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	if (c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

static int read_hex4(parser *p, unsigned *out)
{
	if (p->len - p->pos < 4) return fail(p, "truncated \\u escape");
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		int h = hexval(p->s[p->pos + i]);
		if (h < 0) return fail(p, "bad hex digit in \\u escape");
		v = v << 4 | (unsigned)h;
	}
	p->pos += 4;
	*out = v;
	return 0;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t k;
	unsigned char lo = 0x80, hi = 0xbf;
	if (c < 0x80) return 1;
	if (c >= 0xc2 && c <= 0xdf) k = 2;
	else if (c >= 0xe0 && c <= 0xef) {
		k = 3;
		if (c == 0xe0) lo = 0xa0;
		if (c == 0xed) hi = 0x9f; /* no encoded surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		k = 4;
		if (c == 0xf0) lo = 0x90;
		if (c == 0xf4) hi = 0x8f;
	} else
		return 0;
	if (n < k) return 0;
	if (s[1] < lo || s[1] > hi) return 0;
	for (size_t i = 2; i < k; i++)
		if ((s[i] & 0xc0) != 0x80) return 0;
	return k;
}

static size_t put_utf8(char *o, unsigned cp)
{
	if (cp < 0x80) { o[0] = (char)cp; return 1; }
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | cp >> 6);
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | cp >> 12);
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | cp >> 18);
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* At the opening quote. Decodes into a new buffer. */
static int parse_string(parser *p, char **out, size_t *outlen)
{
	p->pos++; /* the quote */
	/* find the closing quote to size the buffer: decoding never makes a string longer */
	size_t end = p->pos;
	while (end < p->len && p->s[end] != '"') end += (p->s[end] == '\\') ? 2 : 1;
	if (end >= p->len) return fail(p, "unterminated string");
	char *buf = malloc(end - p->pos + 1);
	if (!buf) return fail(p, "out of memory");
	size_t o = 0;
	for (;;) {
		if (p->pos >= p->len) { free(buf); return fail(p, "unterminated string"); }
		unsigned char c = p->s[p->pos];
		if (c == '"') { p->pos++; break; }
		if (c < 0x20) { free(buf); return fail(p, "control character in string"); }
		if (c == '\\') {
			if (p->pos + 1 >= p->len) { free(buf); return fail(p, "unterminated string"); }
			unsigned char e = p->s[p->pos + 1];
			p->pos += 2;
			switch (e) {
			case '"': buf[o++] = '"'; break;
			case '\\': buf[o++] = '\\'; break;
			case '/': buf[o++] = '/'; break;
			case 'b': buf[o++] = '\b'; break;
			case 'f': buf[o++] = '\f'; break;
			case 'n': buf[o++] = '\n'; break;
			case 'r': buf[o++] = '\r'; break;
			case 't': buf[o++] = '\t'; break;
			case 'u': {
				unsigned cp, lo;
				if (read_hex4(p, &cp)) { free(buf); return -1; }
				if (cp >= 0xdc00 && cp <= 0xdfff) {
					free(buf);
					return fail(p, "unpaired low surrogate in \\u escape");
				}
				if (cp >= 0xd800 && cp <= 0xdbff) {
					if (p->len - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
						free(buf);
						return fail(p, "unpaired high surrogate in \\u escape");
					}
					p->pos += 2;
					if (read_hex4(p, &lo)) { free(buf); return -1; }
					if (lo < 0xdc00 || lo > 0xdfff) {
						free(buf);
						return fail(p, "high surrogate not followed by a low surrogate");
					}
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				}
				/* \uXXXX is 6 input bytes for at most 3 output bytes; a pair is 12 for 4 */
				o += put_utf8(buf + o, cp);
				break;
			}
			default:
				p->pos -= 1;
				free(buf);
				return fail(p, "invalid escape in string");
			}
			continue;
		}
		size_t k = utf8_seq(p->s + p->pos, p->len - p->pos);
		if (!k) { free(buf); return fail(p, "invalid UTF-8 in string"); }
		memcpy(buf + o, p->s + p->pos, k);
		o += k;
		p->pos += k;
	}
	buf[o] = 0;
	*out = buf;
	*outlen = o;
	return 0;
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static int parse_number(parser *p, sd_json *v)
{
	size_t start = p->pos;
	int is_int = 1;
	if (p->pos < p->len && p->s[p->pos] == '-') p->pos++;
	if (p->pos >= p->len || !is_digit(p->s[p->pos])) return fail(p, "invalid number");
	if (p->s[p->pos] == '0') {
		p->pos++;
		if (p->pos < p->len && is_digit(p->s[p->pos])) return fail(p, "leading zero in number");
	} else {
		while (p->pos < p->len && is_digit(p->s[p->pos])) p->pos++;
	}
	if (p->pos < p->len && p->s[p->pos] == '.') {
		is_int = 0;
		p->pos++;
		if (p->pos >= p->len || !is_digit(p->s[p->pos])) return fail(p, "digit expected after '.'");
		while (p->pos < p->len && is_digit(p->s[p->pos])) p->pos++;
	}
	if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
		is_int = 0;
		p->pos++;
		if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
		if (p->pos >= p->len || !is_digit(p->s[p->pos])) return fail(p, "digit expected in exponent");
		while (p->pos < p->len && is_digit(p->s[p->pos])) p->pos++;
	}
	size_t n = p->pos - start;
	char small[64], *txt = n < sizeof small ? small : malloc(n + 1);
	if (!txt) return fail(p, "out of memory");
	memcpy(txt, p->s + start, n);
	txt[n] = 0;
	v->type = SD_JSON_NUMBER;
	v->num = strtod(txt, NULL);
	if (txt != small) free(txt);
	v->is_int = 0;
	if (is_int) {
		const unsigned char *d = p->s + start;
		int neg = d[0] == '-';
		uint64_t acc = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
		int ok = 1;
		for (size_t i = (size_t)neg; i < n; i++) {
			unsigned dig = d[i] - '0';
			if (acc > (lim - dig) / 10) { ok = 0; break; }
			acc = acc * 10 + dig;
		}
		if (ok) {
			v->is_int = 1;
			v->ival = neg ? (acc == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)acc) : (int64_t)acc;
		}
	}
	return 0;
}

static int parse_literal(parser *p, const char *word, sd_json_type t, sd_json *v)
{
	size_t n = strlen(word);
	if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0) return fail(p, "unexpected character");
	p->pos += n;
	v->type = t;
	return 0;
}

static void free_value(sd_json *v)
{
	free(v->key);
	free(v->str);
	for (size_t i = 0; i < v->n; i++) free_value(&v->items[i]);
	free(v->items);
}

static int push(parser *p, sd_json *parent, size_t *cap, sd_json **slot)
{
	if (++p->nodes > p->max_nodes) return fail(p, "too many values");
	if (parent->n == *cap) {
		size_t nc = *cap ? *cap * 2 : 4;
		sd_json *ni = realloc(parent->items, nc * sizeof *ni);
		if (!ni) return fail(p, "out of memory");
		parent->items = ni;
		*cap = nc;
	}
	*slot = &parent->items[parent->n];
	memset(*slot, 0, sizeof **slot);
	return 0;
}

static int cmp_members(const void *a, const void *b)
{
	const sd_json *x = *(sd_json *const *)a, *y = *(sd_json *const *)b;
	size_t n = x->keylen < y->keylen ? x->keylen : y->keylen;
	int c = memcmp(x->key, y->key, n);
	if (c) return c;
	return (x->keylen > y->keylen) - (x->keylen < y->keylen);
}

static int check_duplicates(parser *p, const sd_json *obj)
{
	if (obj->n < 2) return 0;
	const sd_json **idx = malloc(obj->n * sizeof *idx);
	if (!idx) return fail(p, "out of memory");
	for (size_t i = 0; i < obj->n; i++) idx[i] = &obj->items[i];
	qsort(idx, obj->n, sizeof *idx, cmp_members);
	for (size_t i = 1; i < obj->n; i++)
		if (!cmp_members(&idx[i - 1], &idx[i])) {
			char msg[200];
			snprintf(msg, sizeof msg, "duplicate key \"%.100s\"", idx[i]->key);
			free(idx);
			return fail(p, msg);
		}
	free(idx);
	return 0;
}

static int parse_value(parser *p, sd_json *v, int depth)
{
	skip_ws(p);
	if (p->pos >= p->len) return fail(p, "unexpected end of input");
	unsigned char c = p->s[p->pos];
	switch (c) {
	case '{':
	case '[': {
		int obj = c == '{';
		size_t cap = 0;
		if (depth >= SD_JSON_MAX_DEPTH) return fail(p, "nesting too deep");
		v->type = obj ? SD_JSON_OBJECT : SD_JSON_ARRAY;
		p->pos++;
		skip_ws(p);
		if (p->pos < p->len && p->s[p->pos] == (obj ? '}' : ']')) { p->pos++; return 0; }
		for (;;) {
			sd_json *item;
			if (push(p, v, &cap, &item)) return -1;
			if (obj) {
				skip_ws(p);
				if (p->pos >= p->len || p->s[p->pos] != '"') return fail(p, "object key expected");
				if (parse_string(p, &item->key, &item->keylen)) return -1;
				v->n++; /* owned from now on, freed with the parent */
				skip_ws(p);
				if (p->pos >= p->len || p->s[p->pos] != ':') return fail(p, "':' expected");
				p->pos++;
				if (parse_value(p, item, depth + 1)) return -1;
			} else {
				v->n++;
				if (parse_value(p, item, depth + 1)) return -1;
			}
			skip_ws(p);
			if (p->pos >= p->len) return fail(p, obj ? "unterminated object" : "unterminated array");
			if (p->s[p->pos] == ',') { p->pos++; continue; }
			if (p->s[p->pos] == (obj ? '}' : ']')) { p->pos++; break; }
			return fail(p, obj ? "',' or '}' expected" : "',' or ']' expected");
		}
		return obj ? check_duplicates(p, v) : 0;
	}
	case '"':
		v->type = SD_JSON_STRING;
		return parse_string(p, &v->str, &v->len);
	case 't': return parse_literal(p, "true", SD_JSON_TRUE, v);
	case 'f': return parse_literal(p, "false", SD_JSON_FALSE, v);
	case 'n': return parse_literal(p, "null", SD_JSON_NULL, v);
	default:
		if (c == '-' || is_digit(c)) return parse_number(p, v);
		return fail(p, "unexpected character");
	}
}

sd_json *sd_json_parse(const char *text, size_t len, char *err, size_t errsize)
{
	return sd_json_parse_limited(text, len, (size_t)-1, err, errsize);
}

sd_json *sd_json_parse_limited(const char *text, size_t len, size_t max_values, char *err, size_t errsize)
{
	parser p = {(const unsigned char *)text, len, 0, err, errsize, 0, 1, max_values};
	if (errsize) err[0] = 0;
	sd_json *v = calloc(1, sizeof *v);
	if (!v) {
		if (errsize) snprintf(err, errsize, "out of memory");
		return NULL;
	}
	if (parse_value(&p, v, 0) == 0) {
		skip_ws(&p);
		if (p.pos == p.len) return v;
		fail(&p, "trailing characters after the JSON value");
	}
	sd_json_free(v);
	return NULL;
}

void sd_json_free(sd_json *v)
{
	if (!v) return;
	free_value(v);
	free(v);
}

const sd_json *sd_json_get(const sd_json *obj, const char *key)
{
	if (!obj || obj->type != SD_JSON_OBJECT) return NULL;
	size_t n = strlen(key);
	for (size_t i = 0; i < obj->n; i++)
		if (obj->items[i].keylen == n && memcmp(obj->items[i].key, key, n) == 0) return &obj->items[i];
	return NULL;
}

const char *sd_json_type_name(sd_json_type t)
{
	static const char *names[] = {"null", "false", "true", "number", "string", "array", "object"};
	return (unsigned)t < sizeof names / sizeof *names ? names[t] : "?";
}

int sd_json_utf8_valid(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	for (size_t i = 0; i < n;) {
		size_t k = utf8_seq(u + i, n - i);
		if (!k) return 0;
		i += k;
	}
	return 1;
}
