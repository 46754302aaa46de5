/* A small strict JSON parser (RFC 8259) for file headers such as safetensors'. Strict: UTF-8
 * text only, no trailing garbage, no comments, no trailing commas, no leading zeros, escapes
 * checked (\uXXXX surrogate pairs must pair up), nesting limited, duplicate object keys
 * rejected. Strings are decoded to UTF-8 and NUL-terminated (they may contain \u0000, so use
 * len). Integers without fraction or exponent that fit in int64 are kept exactly. */
#ifndef SD_JSON_H
#define SD_JSON_H

#include <stddef.h>
#include <stdint.h>

typedef enum sd_json_type {
	SD_JSON_NULL, SD_JSON_FALSE, SD_JSON_TRUE, SD_JSON_NUMBER, SD_JSON_STRING, SD_JSON_ARRAY,
	SD_JSON_OBJECT
} sd_json_type;

typedef struct sd_json sd_json;
struct sd_json {
	sd_json_type type;
	char *key;            /* member name when this value is inside an object, else NULL */
	size_t keylen;
	char *str;            /* SD_JSON_STRING: decoded bytes, NUL-terminated */
	size_t len;
	double num;           /* SD_JSON_NUMBER */
	int is_int;           /* the number is an integer literal that fits in int64 ... */
	int64_t ival;         /* ... with this value */
	size_t n;             /* SD_JSON_ARRAY / SD_JSON_OBJECT: items (members in file order) */
	sd_json *items;
};

#define SD_JSON_MAX_DEPTH 64

/* Parses text[0..len) as one JSON value (surrounded by optional whitespace). On error returns
 * NULL and writes a message with the byte offset into err. */
sd_json *sd_json_parse(const char *text, size_t len, char *err, size_t errsize);
/* The same with at most max_values values in all (a bound on memory: about 100 bytes each). */
sd_json *sd_json_parse_limited(const char *text, size_t len, size_t max_values, char *err, size_t errsize);
void sd_json_free(sd_json *v);
/* The member named key (exact bytes) of an object, or NULL. */
const sd_json *sd_json_get(const sd_json *obj, const char *key);
const char *sd_json_type_name(sd_json_type t);
/* 1 when s[0..n) is valid UTF-8 (no overlong forms, no surrogates), else 0. */
int sd_json_utf8_valid(const char *s, size_t n);

#endif
