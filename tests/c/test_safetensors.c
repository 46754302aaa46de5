/* safetensors: the strict JSON parser, every validation rule of the reader on crafted buffers,
 * loading through a mapping (zero-copy, misaligned data copied), and the atomic writer. */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "check.h"
#include "json.h"
#include "safetensors.h"
#include "sd_error.h"

static char tmpdir[256];

/* A file image: 8-byte length, header (padded with spaces to 8 unless raw), data. */
static size_t mk(unsigned char *buf, const char *header, const void *data, size_t ndata, int pad)
{
	size_t n = strlen(header);
	memcpy(buf + 8, header, n);
	while (pad && (8 + n) % 8) buf[8 + n++] = ' ';
	for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)n >> (8 * i));
	if (ndata) memcpy(buf + 8 + n, data, ndata);
	return 8 + n + ndata;
}

/* Parses header + ndata zero bytes; returns 0/-1 and leaves the message in sd_geterr(). */
static int parse(const char *header, size_t ndata)
{
	static unsigned char buf[1 << 16];
	static const unsigned char zeros[4096];
	size_t n = mk(buf, header, zeros, ndata, 1);
	sd_st_header h;
	int rc = sd_st_parse(buf, n, n, "t.safetensors", &h);
	if (rc == 0) sd_st_header_free(&h);
	return rc;
}

#define REJECTS(header, ndata, msg)                                                                \
	do {                                                                                       \
		int rc_ = parse(header, ndata);                                                    \
		CHECK(rc_ != 0, "accepted: %s", header);                                           \
		CHECK(rc_ == 0 || strstr(sd_geterr(), msg), "%s: message '%s' lacks '%s'", header, \
		      sd_geterr(), msg);                                                           \
		CHECK(rc_ == 0 || strstr(sd_geterr(), "t.safetensors"), "no file name in '%s'",     \
		      sd_geterr());                                                                \
	} while (0)

static void json_strict(void)
{
	char err[256];
	static const char *bad[] = {"", "{", "{\"a\":}", "[1,]", "{\"a\":1,}", "01", "1.", ".5", "1e", "-", "+1",
	                            "\"\\x\"", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"",
	                            "\"a\x01\"", "\"\xff\"", "\"\xc0\x80\"", "\"\xed\xa0\x80\"", "tru", "nul",
	                            "{} x", "[1 2]", "{\"a\" 1}", "{1:2}", "'a'", "\"abc", "{\"a\":1,\"a\":2}",
	                            "NaN", "Infinity", "\xef\xbb\xbf{}"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		sd_json *v = sd_json_parse(bad[i], strlen(bad[i]), err, sizeof err);
		CHECK(!v, "accepted bad JSON #%zu: %s", i, bad[i]);
		CHECK(v || strstr(err, "invalid JSON at byte"), "message '%s'", err);
		sd_json_free(v);
	}
	const char *good = " {\"a\\u00e9\\ud83d\\ude00\\n\":[1,-0,2.5e-3,true,false,null,\"x\\\"\\\\\\/\"],"
	                   "\"big\":123456789012345678901,\"min\":-9223372036854775808} ";
	sd_json *v = sd_json_parse(good, strlen(good), err, sizeof err);
	CHECK(v && v->type == SD_JSON_OBJECT && v->n == 3, "good JSON rejected: %s", err);
	if (v && v->n == 3) {
		CHECK(v->items[0].keylen == 8 && memcmp(v->items[0].key, "a\xc3\xa9\xf0\x9f\x98\x80\n", 8) == 0,
		      "escapes decoded wrongly");
		const sd_json *arr = &v->items[0];
		CHECK(arr->n == 7 && arr->items[0].is_int && arr->items[0].ival == 1, "array");
		CHECK(arr->n == 7 && !arr->items[2].is_int && arr->items[2].num == 2.5e-3, "float");
		CHECK(arr->n == 7 && strcmp(arr->items[6].str, "x\"\\/") == 0, "string escapes");
		CHECK(!v->items[1].is_int && v->items[1].num > 1e20, "integer too big for int64 is not exact");
		CHECK(v->items[2].is_int && v->items[2].ival == INT64_MIN, "INT64_MIN");
	}
	sd_json_free(v);
	char deep[200];
	memset(deep, '[', 100);
	memset(deep + 100, ']', 100);
	v = sd_json_parse(deep, 200, err, sizeof err);
	CHECK(!v && strstr(err, "nesting too deep"), "deep nesting: %s", err);
	sd_json_free(v);
	v = sd_json_parse(deep + 100 - SD_JSON_MAX_DEPTH, 2 * SD_JSON_MAX_DEPTH, err, sizeof err);
	CHECK(v != NULL, "nesting at the limit rejected: %s", err);
	sd_json_free(v);
	v = sd_json_parse_limited("[1,[2],3]", 9, 4, err, sizeof err);
	CHECK(!v && strstr(err, "too many values"), "value limit: %s", v ? "accepted" : err);
	sd_json_free(v);
	v = sd_json_parse_limited("[1,[2],3]", 9, 5, err, sizeof err);
	CHECK(v != NULL, "value limit off by one: %s", err);
	sd_json_free(v);
	v = sd_json_parse("\"a\\u0000b\"", 10, err, sizeof err);
	CHECK(v && v->len == 3 && v->str[1] == 0, "embedded NUL");
	sd_json_free(v);
}

static void header_rules(void)
{
	unsigned char buf[64];
	sd_st_header h;
	/* file framing */
	CHECK(sd_st_parse("\1\0\0", 3, 3, "t.safetensors", &h) != 0 && strstr(sd_geterr(), "too short"), "short: %s", sd_geterr());
	memset(buf, 0, 16);
	buf[7] = 0x40; /* 2^62 */
	CHECK(sd_st_parse(buf, 16, 16, "t.safetensors", &h) != 0 && strstr(sd_geterr(), "exceeds the limit"), "huge: %s", sd_geterr());
	size_t n = mk(buf, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", NULL, 0, 1);
	CHECK(sd_st_parse(buf, 10, 10, "t.safetensors", &h) != 0 && strstr(sd_geterr(), "runs past the end"), "past end: %s", sd_geterr());
	(void)n;
	REJECTS("[]", 0, "does not start with '{'");
	REJECTS(" {}", 0, "does not start with '{'");
	/* JSON */
	REJECTS("{\"a\":{\"dtype\":\"F32\",}}", 0, "invalid JSON");
	REJECTS("{}x", 0, "trailing characters");
	REJECTS("{\"\\ud800\":{}}", 0, "surrogate");
	REJECTS("{\"\\q\":{}}", 0, "invalid escape");
	REJECTS("{\"\xc3\x28\":{}}", 0, "invalid UTF-8");
	REJECTS("{\"__metadata__\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}", 0, "nesting too deep");
	/* duplicate names */
	REJECTS("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
	        2, "duplicate key \"a\"");
	/* metadata */
	REJECTS("{\"__metadata__\":{\"n\":1}}", 0, "__metadata__ value of 'n' must be a string, got number");
	REJECTS("{\"__metadata__\":{\"n\":{\"x\":\"y\"}}}", 0, "must be a string, got object");
	REJECTS("{\"__metadata__\":\"x\"}", 0, "__metadata__ must be an object");
	/* entries */
	REJECTS("{\"w\":[1]}", 0, "tensor 'w': entry must be an object");
	REJECTS("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'w': missing 'dtype'");
	REJECTS("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "tensor 'w': missing 'shape'");
	REJECTS("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor 'w': missing 'data_offsets'");
	REJECTS("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4, "tensor 'w': unexpected key 'x'");
	REJECTS("{\"w\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'w': unknown dtype 'F33'");
	REJECTS("{\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype 'f32'");
	REJECTS("{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype must be a string");
	REJECTS("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "non-negative integers");
	REJECTS("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4, "non-negative integers");
	REJECTS("{\"w\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", 4, "shape must be a list");
	REJECTS("{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1, "at most 8");
	REJECTS("{\"w\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,4]}}", 4, "too large");
	REJECTS("{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]}}", 4, "too large");
	REJECTS("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, "list of two integers");
	REJECTS("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "non-negative");
	REJECTS("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, "end before they begin");
	REJECTS("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
	        "tensor 'w': shape (3,) of F32 needs 12 bytes but data_offsets [0, 8) hold 8");
	REJECTS("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 12, "lie outside the data section of 12 bytes");
	REJECTS("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[2,10]}}",
	        10, "tensors 'w' [0, 4) and 'v' [2, 10) overlap");
	REJECTS("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
	        8, "overlap");
}

static void header_good(void)
{
	static unsigned char buf[4096];
	const char *hdr = "{\"__metadata__\":{\"format\":\"pt\",\"k\\u00e9\":\"v\"},"
	                  "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[8,16]},"
	                  "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	                  "\"e\":{\"dtype\":\"I64\",\"shape\":[0,3],\"data_offsets\":[16,16]},"
	                  "\"s\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[16,17]},"
	                  "\"d\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[24,32]}}";
	unsigned char data[32] = {0};
	size_t n = mk(buf, hdr, data, sizeof data, 1);
	sd_st_header h;
	int rc = sd_st_parse(buf, n, n, "t.safetensors", &h);
	CHECK(rc == 0, "rejected: %s", sd_geterr());
	if (rc) return;
	CHECK(h.ntensors == 5 && h.nmeta == 2, "counts %zu %zu", h.ntensors, h.nmeta);
	CHECK(h.ntensors == 5 && strcmp(h.tensors[0].name, "b") == 0 && h.tensors[0].dtype == SD_BF16 &&
	          h.tensors[0].ndim == 2 && h.tensors[0].begin == 8 && h.tensors[0].end == 16,
	      "entry b");
	CHECK(h.ntensors == 5 && h.tensors[3].ndim == 0 && h.tensors[2].shape[0] == 0, "scalar / empty");
	CHECK(h.ntensors == 5 && !h.tensors[4].supported && strcmp(h.tensors[4].file_dtype, "F64") == 0, "F64 recognised");
	CHECK(h.nmeta == 2 && strcmp(h.meta[1].key, "k\xc3\xa9") == 0 && strcmp(h.meta[1].value, "v") == 0, "metadata");
	CHECK(h.data_offset == 8 + h.header_len && h.data_offset % 8 == 0 && h.data_size == 32, "offsets");
	sd_st_header_free(&h);
	/* an empty header, and null metadata */
	CHECK(parse("{}", 0) == 0, "{} rejected: %s", sd_geterr());
	CHECK(parse("{\"__metadata__\":null}", 0) == 0, "null metadata rejected: %s", sd_geterr());
	/* gaps between tensors and trailing bytes are tolerated */
	CHECK(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[3,4]}}", 10) == 0, "gap rejected: %s", sd_geterr());
}

static int write_file(const char *path, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) return -1;
	int ok = write(fd, p, n) == (ssize_t)n;
	close(fd);
	return ok ? 0 : -1;
}

static void load_mapped(void)
{
	static unsigned char buf[4096];
	float vals[3] = {1.5f, -2.25f, 3.0f};
	unsigned char data[16] = {0};
	memcpy(data + 1, vals, sizeof vals); /* misaligned F32 at data offset 1 */
	data[13] = 7;
	const char *hdr = "{\"m\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[1,13]},"
	                  "\"u\":{\"dtype\":\"U8\",\"shape\":[1,1],\"data_offsets\":[13,14]}}";
	size_t n = mk(buf, hdr, data, sizeof data, 1);
	char path[300];
	snprintf(path, sizeof path, "%s/m.safetensors", tmpdir);
	CHECK(write_file(path, buf, n) == 0, "cannot write %s", path);
	sd_st_header h;
	sd_tensor *t;
	int rc = sd_st_load(path, &h, &t);
	CHECK(rc == 0, "load: %s", sd_geterr());
	if (rc) return;
	CHECK(t[0].dtype == SD_F32 && memcmp(sd_tensor_data(&t[0]), vals, sizeof vals) == 0, "misaligned values");
	CHECK(t[0].storage->map == NULL, "misaligned tensor not copied");
	CHECK(t[1].storage->map != NULL && *(unsigned char *)sd_tensor_data(&t[1]) == 7, "u8 tensor not mapped");
	sd_st_tensors_free(t, h.ntensors);
	sd_st_header_free(&h);
	/* header only */
	rc = sd_st_read_header(path, &h);
	CHECK(rc == 0 && h.ntensors == 2, "read_header: %s", sd_geterr());
	if (!rc) sd_st_header_free(&h);
	/* unsupported dtype: the header reads, loading names the tensor */
	n = mk(buf, "{\"d\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", data, 8, 1);
	CHECK(write_file(path, buf, n) == 0, "write");
	rc = sd_st_load(path, &h, &t);
	CHECK(rc != 0 && strstr(sd_geterr(), "unsupported dtype F64 for tensor 'd'") && strstr(sd_geterr(), path),
	      "F64: %s", sd_geterr());
	rc = sd_st_read_header(path, &h);
	CHECK(rc == 0, "F64 header: %s", sd_geterr());
	if (!rc) sd_st_header_free(&h);
	/* a truncated file */
	n = mk(buf, "{\"d\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", data, 16, 1);
	CHECK(write_file(path, buf, n - 3) == 0, "write");
	rc = sd_st_load(path, &h, &t);
	CHECK(rc != 0 && strstr(sd_geterr(), "outside the data section"), "truncated: %s", sd_geterr());
	CHECK(write_file(path, buf, 20) == 0, "write");
	rc = sd_st_read_header(path, &h);
	CHECK(rc != 0 && strstr(sd_geterr(), "runs past the end"), "truncated header: %s", sd_geterr());
	rc = sd_st_load("/nonexistent/x.safetensors", &h, &t);
	CHECK(rc != 0 && strstr(sd_geterr(), "/nonexistent/x.safetensors"), "missing file: %s", sd_geterr());
}

static int count_tmp_files(void)
{
	DIR *d = opendir(tmpdir);
	int n = 0;
	struct dirent *e;
	while (d && (e = readdir(d)))
		if (strstr(e->d_name, ".tmp-")) n++;
	if (d) closedir(d);
	return n;
}

static void writer(void)
{
	char path[300];
	snprintf(path, sizeof path, "%s/w.safetensors", tmpdir);
	sd_tensor a, b, c, bt;
	int64_t sa[2] = {2, 3}, sb[1] = {3}, sc[3] = {1, 2, 2};
	CHECK(sd_tensor_new(&a, SD_F32, 2, sa) == 0 && sd_tensor_new(&b, SD_F16, 1, sb) == 0 &&
	          sd_tensor_new(&c, SD_I64, 3, sc) == 0,
	      "alloc");
	for (int i = 0; i < 6; i++) ((float *)sd_tensor_data(&a))[i] = (float)i;
	for (int i = 0; i < 3; i++) ((uint16_t *)sd_tensor_data(&b))[i] = (uint16_t)(0x3c00 + i);
	for (int i = 0; i < 4; i++) ((int64_t *)sd_tensor_data(&c))[i] = -1 - i;
	CHECK(sd_tensor_transpose(&a, &bt, 0, 1) == 0, "transpose");
	sd_st_entry e[4] = {{"zeta", 4, &b}, {"alpha", 5, &a}, {"t", 1, &bt}, {"c\"\n", 3, &c}};
	sd_st_kv kv[2] = {{"z", 1, "last", 4}, {"a", 1, "fi\"rst\x01", 7}};
	int rc = sd_st_save(path, e, 4, kv, 2);
	CHECK(rc == 0, "save: %s", sd_geterr());
	sd_st_header h;
	sd_tensor *t;
	rc = sd_st_load(path, &h, &t);
	CHECK(rc == 0, "load back: %s", sd_geterr());
	if (rc == 0) {
		CHECK(h.ntensors == 4 && h.nmeta == 2, "counts");
		CHECK(h.data_offset % 8 == 0, "header not padded to 8: %llu", (unsigned long long)h.data_offset);
		/* header order is by name */
		const char *order[4] = {"alpha", "c\"\n", "t", "zeta"};
		for (size_t i = 0; i < 4 && i < h.ntensors; i++)
			CHECK(strcmp(h.tensors[i].name, order[i]) == 0, "entry %zu is %s", i, h.tensors[i].name);
		CHECK(h.nmeta == 2 && strcmp(h.meta[0].key, "a") == 0 && strcmp(h.meta[0].value, "fi\"rst\x01") == 0, "meta");
		if (h.ntensors == 4) {
			CHECK(memcmp(sd_tensor_data(&t[0]), sd_tensor_data(&a), 24) == 0, "f32 data");
			CHECK(t[2].shape[0] == 3 && t[2].shape[1] == 2 && sd_tensor_is_contiguous(&t[2]), "transposed shape");
			const float *tv = sd_tensor_data(&t[2]);
			CHECK(tv[0] == 0 && tv[1] == 3 && tv[2] == 1 && tv[5] == 5, "transposed data %g %g %g", tv[0], tv[1], tv[2]);
			CHECK(t[3].dtype == SD_F16 && memcmp(sd_tensor_data(&t[3]), sd_tensor_data(&b), 6) == 0, "f16 data");
			CHECK(t[1].dtype == SD_I64 && memcmp(sd_tensor_data(&t[1]), sd_tensor_data(&c), 32) == 0, "i64 data");
			for (size_t i = 0; i < 4; i++)
				CHECK(t[i].storage->map != NULL, "tensor %zu not zero-copy (misaligned by the writer)", i);
		}
		sd_st_tensors_free(t, h.ntensors);
		sd_st_header_free(&h);
	}
	struct stat st0, st1;
	stat(path, &st0);
	/* failures before writing: the target stays as it was, no temporary is left */
	sd_st_entry dup[2] = {{"x", 1, &a}, {"x", 1, &b}};
	rc = sd_st_save(path, dup, 2, NULL, 0);
	CHECK(rc != 0 && strstr(sd_geterr(), "duplicate tensor name 'x'"), "duplicate: %s", sd_geterr());
	sd_st_entry meta_name[1] = {{"__metadata__", 12, &a}};
	rc = sd_st_save(path, meta_name, 1, NULL, 0);
	CHECK(rc != 0 && strstr(sd_geterr(), "__metadata__"), "reserved name: %s", sd_geterr());
	sd_st_entry badutf[1] = {{"\xff", 1, &a}};
	rc = sd_st_save(path, badutf, 1, NULL, 0);
	CHECK(rc != 0 && strstr(sd_geterr(), "UTF-8"), "bad utf8: %s", sd_geterr());
	sd_st_kv dupkv[2] = {{"k", 1, "1", 1}, {"k", 1, "2", 1}};
	rc = sd_st_save(path, e, 1, dupkv, 2);
	CHECK(rc != 0 && strstr(sd_geterr(), "duplicate metadata key"), "dup meta: %s", sd_geterr());
	/* a failure after the temporary was written: the target is a directory, rename fails */
	char dir[300];
	snprintf(dir, sizeof dir, "%s/adir", tmpdir);
	mkdir(dir, 0755);
	rc = sd_st_save(dir, e, 4, kv, 2);
	CHECK(rc != 0 && strstr(sd_geterr(), "rename"), "rename onto a directory: %s", sd_geterr());
	CHECK(count_tmp_files() == 0, "temporary file left behind");
	stat(path, &st1);
	CHECK(st0.st_ino == st1.st_ino && st0.st_size == st1.st_size && st0.st_mtime == st1.st_mtime, "target changed");
	rc = sd_st_save("/nonexistent-dir/x.safetensors", e, 1, NULL, 0);
	CHECK(rc != 0 && strstr(sd_geterr(), "temporary"), "missing dir: %s", sd_geterr());
	/* an empty file */
	rc = sd_st_save(path, NULL, 0, NULL, 0);
	CHECK(rc == 0, "empty save: %s", sd_geterr());
	rc = sd_st_load(path, &h, &t);
	CHECK(rc == 0 && h.ntensors == 0, "empty load: %s", sd_geterr());
	if (rc == 0) {
		sd_st_tensors_free(t, 0);
		sd_st_header_free(&h);
	}
	rmdir(dir);
	sd_tensor_release(&bt);
	sd_tensor_release(&a);
	sd_tensor_release(&b);
	sd_tensor_release(&c);
}

int main(void)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/sdlua-test-st-XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	RUN("safetensors: strict JSON", json_strict());
	RUN("safetensors: every header rule", header_rules());
	RUN("safetensors: a valid header", header_good());
	RUN("safetensors: mapped loading", load_mapped());
	RUN("safetensors: atomic writer", writer());
	char cmd[400];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", tmpdir);
	CHECK_DONE();
}
