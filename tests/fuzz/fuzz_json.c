/* libFuzzer harness for the strict JSON parser: arbitrary bytes must parse or fail cleanly; an
 * accepted document's strings must be valid UTF-8 and objects must have no duplicate keys. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "json.h"

static void walk(const sd_json *v, int depth)
{
	if (depth > SD_JSON_MAX_DEPTH + 1) abort();
	if (v->type == SD_JSON_STRING && (!sd_json_utf8_valid(v->str, v->len) || v->str[v->len] != 0)) abort();
	if (v->key && !sd_json_utf8_valid(v->key, v->keylen)) abort();
	for (size_t i = 0; i < v->n; i++) {
		walk(&v->items[i], depth + 1);
		if (v->type == SD_JSON_OBJECT)
			for (size_t j = 0; j < i && j < 64; j++)
				if (v->items[j].keylen == v->items[i].keylen &&
				    memcmp(v->items[j].key, v->items[i].key, v->items[i].keylen) == 0)
					abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	sd_json *v = sd_json_parse((const char *)data, size, err, sizeof err);
	if (!v) {
		if (!err[0]) abort();
		return 0;
	}
	walk(v, 0);
	sd_json_free(v);
	return 0;
}
