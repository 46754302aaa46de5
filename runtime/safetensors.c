/* safetensors reader and writer (see safetensors.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "json.h"
#include "safetensors.h"
#include "sd_error.h"

typedef unsigned long long ull;

/* JSON values accepted in a header: about 15 per tensor, so room for 130000 tensors, and a
 * hostile header of "[0,0,0,..." cannot make the parser allocate gigabytes. */
#define SD_ST_MAX_VALUES ((size_t)2000000)

/* Every dtype name of the format, with its size; sd < 0 for those this runtime cannot hold. */
static const struct { const char *name; size_t size; int sd; } st_dtypes[] = {
	{"F32", 4, SD_F32}, {"F16", 2, SD_F16}, {"BF16", 2, SD_BF16}, {"I32", 4, SD_I32},
	{"I64", 8, SD_I64}, {"U8", 1, SD_U8},
	{"F64", 8, -1}, {"I8", 1, -1}, {"I16", 2, -1}, {"U16", 2, -1}, {"U32", 4, -1}, {"U64", 8, -1},
	{"BOOL", 1, -1}, {"F8_E4M3", 1, -1}, {"F8_E5M2", 1, -1}, {"F8_E8M0", 1, -1},
};
#define N_ST_DTYPES (sizeof st_dtypes / sizeof *st_dtypes)

static const char *st_name_of(sd_dtype dt)
{
	for (size_t i = 0; i < N_ST_DTYPES; i++)
		if (st_dtypes[i].sd == (int)dt) return st_dtypes[i].name;
	return NULL;
}

static uint64_t le64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
	return v;
}

void sd_st_header_free(sd_st_header *h)
{
	for (size_t i = 0; i < h->ntensors; i++) free(h->tensors[i].name);
	for (size_t i = 0; i < h->nmeta; i++) {
		free(h->meta[i].key);
		free(h->meta[i].value);
	}
	free(h->tensors);
	free(h->meta);
	memset(h, 0, sizeof *h);
}

static int is_key(const sd_json *m, const char *k)
{
	size_t n = strlen(k);
	return m->keylen == n && memcmp(m->key, k, n) == 0;
}

/* Fills ti from the tensor entry v (the name is taken by the caller). */
static int parse_entry(const char *what, const char *name, const sd_json *v, uint64_t data_size, sd_st_info *ti)
{
	if (v->type != SD_JSON_OBJECT)
		return sd_seterr("%s: tensor '%.100s': entry must be an object, got %s", what, name, sd_json_type_name(v->type));
	const sd_json *dt = NULL, *shape = NULL, *offs = NULL;
	for (size_t i = 0; i < v->n; i++) {
		const sd_json *m = &v->items[i];
		if (is_key(m, "dtype")) dt = m;
		else if (is_key(m, "shape")) shape = m;
		else if (is_key(m, "data_offsets")) offs = m;
		else return sd_seterr("%s: tensor '%.100s': unexpected key '%.60s'", what, name, m->key);
	}
	if (!dt) return sd_seterr("%s: tensor '%.100s': missing 'dtype'", what, name);
	if (!shape) return sd_seterr("%s: tensor '%.100s': missing 'shape'", what, name);
	if (!offs) return sd_seterr("%s: tensor '%.100s': missing 'data_offsets'", what, name);

	if (dt->type != SD_JSON_STRING)
		return sd_seterr("%s: tensor '%.100s': dtype must be a string, got %s", what, name, sd_json_type_name(dt->type));
	size_t k;
	for (k = 0; k < N_ST_DTYPES; k++)
		if (strlen(st_dtypes[k].name) == dt->len && memcmp(st_dtypes[k].name, dt->str, dt->len) == 0) break;
	if (k == N_ST_DTYPES) return sd_seterr("%s: tensor '%.100s': unknown dtype '%.20s'", what, name, dt->str);
	snprintf(ti->file_dtype, sizeof ti->file_dtype, "%s", st_dtypes[k].name);
	ti->elsize = st_dtypes[k].size;
	ti->supported = st_dtypes[k].sd >= 0;
	ti->dtype = ti->supported ? (sd_dtype)st_dtypes[k].sd : SD_F32;

	if (shape->type != SD_JSON_ARRAY)
		return sd_seterr("%s: tensor '%.100s': shape must be a list, got %s", what, name, sd_json_type_name(shape->type));
	if (shape->n > SD_MAX_DIMS)
		return sd_seterr("%s: tensor '%.100s': shape has %zu dimensions, at most %d are supported", what, name, shape->n, SD_MAX_DIMS);
	uint64_t numel = 1;
	int overflow = 0;
	ti->ndim = (int)shape->n;
	for (size_t i = 0; i < shape->n; i++) {
		const sd_json *d = &shape->items[i];
		if (d->type != SD_JSON_NUMBER || !d->is_int || d->ival < 0)
			return sd_seterr("%s: tensor '%.100s': shape must hold non-negative integers (dimension %zu)", what, name, i + 1);
		ti->shape[i] = d->ival;
		if (__builtin_mul_overflow(numel, (uint64_t)d->ival, &numel)) overflow = 1;
	}
	uint64_t nbytes = 0;
	if (overflow || __builtin_mul_overflow(numel, (uint64_t)ti->elsize, &nbytes))
		return sd_seterr("%s: tensor '%.100s': shape %s is too large", what, name, sd_shape_str(ti->ndim, ti->shape, (char[160]){0}, 160));

	if (offs->type != SD_JSON_ARRAY || offs->n != 2)
		return sd_seterr("%s: tensor '%.100s': data_offsets must be a list of two integers", what, name);
	for (int i = 0; i < 2; i++) {
		const sd_json *d = &offs->items[i];
		if (d->type != SD_JSON_NUMBER || !d->is_int || d->ival < 0)
			return sd_seterr("%s: tensor '%.100s': data_offsets must be two non-negative integers", what, name);
	}
	ti->begin = (uint64_t)offs->items[0].ival;
	ti->end = (uint64_t)offs->items[1].ival;
	if (ti->begin > ti->end)
		return sd_seterr("%s: tensor '%.100s': data_offsets [%llu, %llu) end before they begin", what, name, (ull)ti->begin, (ull)ti->end);
	if (ti->end > data_size)
		return sd_seterr("%s: tensor '%.100s': data_offsets [%llu, %llu) lie outside the data section of %llu bytes (truncated file?)",
		                 what, name, (ull)ti->begin, (ull)ti->end, (ull)data_size);
	if (ti->end - ti->begin != nbytes)
		return sd_seterr("%s: tensor '%.100s': shape %s of %s needs %llu bytes but data_offsets [%llu, %llu) hold %llu", what, name,
		                 sd_shape_str(ti->ndim, ti->shape, (char[160]){0}, 160), ti->file_dtype, (ull)nbytes, (ull)ti->begin,
		                 (ull)ti->end, (ull)(ti->end - ti->begin));
	return 0;
}

static int cmp_range(const void *a, const void *b)
{
	const sd_st_info *x = *(sd_st_info *const *)a, *y = *(sd_st_info *const *)b;
	if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end) return x->end < y->end ? -1 : 1;
	return 0;
}

static int check_overlaps(const char *what, sd_st_header *h)
{
	if (h->ntensors < 2) return 0;
	sd_st_info **idx = malloc(h->ntensors * sizeof *idx);
	if (!idx) return sd_seterr("%s: out of memory", what);
	size_t m = 0;
	for (size_t i = 0; i < h->ntensors; i++)
		if (h->tensors[i].end > h->tensors[i].begin) idx[m++] = &h->tensors[i];
	qsort(idx, m, sizeof *idx, cmp_range);
	for (size_t i = 1; i < m; i++)
		if (idx[i]->begin < idx[i - 1]->end) {
			sd_seterr("%s: tensors '%.100s' [%llu, %llu) and '%.100s' [%llu, %llu) overlap", what, idx[i - 1]->name,
			          (ull)idx[i - 1]->begin, (ull)idx[i - 1]->end, idx[i]->name, (ull)idx[i]->begin, (ull)idx[i]->end);
			free(idx);
			return -1;
		}
	free(idx);
	return 0;
}

int sd_st_parse(const void *buf, size_t buflen, uint64_t file_size, const char *what, sd_st_header *h)
{
	const unsigned char *b = buf;
	memset(h, 0, sizeof *h);
	if (!what) what = "safetensors";
	if (file_size < 8 || buflen < 8)
		return sd_seterr("%s: file of %llu bytes is too short to be a safetensors file", what, (ull)file_size);
	uint64_t n = le64(b);
	if (n > SD_ST_MAX_HEADER)
		return sd_seterr("%s: header length %llu exceeds the limit of %llu bytes (not a safetensors file?)", what, (ull)n,
		                 (ull)SD_ST_MAX_HEADER);
	if (n > file_size - 8)
		return sd_seterr("%s: header length %llu runs past the end of the file of %llu bytes (truncated?)", what, (ull)n,
		                 (ull)file_size);
	if (buflen - 8 < n) return sd_seterr("%s: only %zu of the %llu header bytes are available", what, buflen - 8, (ull)n);
	if (n == 0 || b[8] != '{') return sd_seterr("%s: header does not start with '{' (not a safetensors file?)", what);

	char err[256];
	sd_json *root = sd_json_parse_limited((const char *)b + 8, (size_t)n, SD_ST_MAX_VALUES, err, sizeof err);
	if (!root) return sd_seterr("%s: header: %s", what, err);
	if (root->type != SD_JSON_OBJECT) {
		sd_json_free(root);
		return sd_seterr("%s: header is not a JSON object", what);
	}
	h->header_len = n;
	h->data_offset = 8 + n;
	h->data_size = file_size - 8 - n;
	if (root->n) {
		h->tensors = calloc(root->n, sizeof *h->tensors);
		if (!h->tensors) goto oom;
	}
	for (size_t i = 0; i < root->n; i++) {
		sd_json *m = &root->items[i];
		if (is_key(m, "__metadata__")) {
			if (m->type == SD_JSON_NULL) continue;
			if (m->type != SD_JSON_OBJECT) {
				sd_seterr("%s: __metadata__ must be an object of strings, got %s", what, sd_json_type_name(m->type));
				goto fail;
			}
			if (m->n) {
				h->meta = calloc(m->n, sizeof *h->meta);
				if (!h->meta) goto oom;
			}
			for (size_t j = 0; j < m->n; j++) {
				sd_json *kv = &m->items[j];
				if (kv->type != SD_JSON_STRING) {
					sd_seterr("%s: __metadata__ value of '%.100s' must be a string, got %s", what, kv->key,
					          sd_json_type_name(kv->type));
					goto fail;
				}
				sd_st_meta *e = &h->meta[h->nmeta++];
				e->key = kv->key;
				e->keylen = kv->keylen;
				e->value = kv->str;
				e->valuelen = kv->len;
				kv->key = kv->str = NULL;
			}
			continue;
		}
		sd_st_info *ti = &h->tensors[h->ntensors];
		if (parse_entry(what, m->key, m, h->data_size, ti)) goto fail;
		ti->name = m->key;
		ti->namelen = m->keylen;
		m->key = NULL;
		h->ntensors++;
	}
	sd_json_free(root);
	root = NULL;
	if (check_overlaps(what, h)) goto fail;
	return 0;
oom:
	sd_seterr("%s: out of memory", what);
fail:
	sd_json_free(root);
	sd_st_header_free(h);
	return -1;
}

int sd_st_read_header(const char *path, sd_st_header *h)
{
	memset(h, 0, sizeof *h);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) return sd_seterr("cannot open %s: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return sd_seterr("%s is not a regular file", path);
	}
	uint64_t size = (uint64_t)st.st_size;
	unsigned char first[8];
	ssize_t r = size >= 8 ? pread(fd, first, 8, 0) : 0;
	if (size >= 8 && r != 8) {
		close(fd);
		return sd_seterr("cannot read %s: %s", path, r < 0 ? strerror(errno) : "short read");
	}
	uint64_t n = size >= 8 ? le64(first) : 0;
	if (size < 8 || n > SD_ST_MAX_HEADER || n > size - 8) {
		close(fd);
		return sd_st_parse(first, size < 8 ? 0 : 8, size, path, h); /* reports the problem */
	}
	unsigned char *buf = malloc(8 + (size_t)n);
	if (!buf) {
		close(fd);
		return sd_seterr("%s: out of memory reading a header of %llu bytes", path, (ull)n);
	}
	size_t got = 0;
	while (got < 8 + n) {
		r = pread(fd, buf + got, 8 + (size_t)n - got, (off_t)got);
		if (r < 0 && errno == EINTR) continue;
		if (r <= 0) {
			free(buf);
			close(fd);
			return sd_seterr("cannot read %s: %s", path, r < 0 ? strerror(errno) : "unexpected end of file");
		}
		got += (size_t)r;
	}
	close(fd);
	int rc = sd_st_parse(buf, got, size, path, h);
	free(buf);
	return rc;
}

void sd_st_tensors_free(sd_tensor *tensors, size_t n)
{
	if (!tensors) return;
	for (size_t i = 0; i < n; i++) sd_tensor_release(&tensors[i]);
	free(tensors);
}

int sd_st_load_mapping(sd_mapping *m, const char *what, sd_st_header *h, sd_tensor **tensors)
{
	*tensors = NULL;
	size_t size = sd_mapping_size(m);
	const unsigned char *base = sd_mapping_data(m);
	if (sd_st_parse(base, size, size, what, h)) return -1;
	for (size_t i = 0; i < h->ntensors; i++)
		if (!h->tensors[i].supported) {
			sd_seterr("%s: unsupported dtype %s for tensor '%.100s' (supported: F32, F16, BF16, I32, I64, U8)", what,
			          h->tensors[i].file_dtype, h->tensors[i].name);
			sd_st_header_free(h);
			return -1;
		}
	sd_tensor *t = calloc(h->ntensors ? h->ntensors : 1, sizeof *t);
	sd_storage *s = t ? sd_storage_from_mapping(m, 0, size) : NULL;
	if (!s) {
		if (!t) sd_seterr("%s: out of memory", what);
		free(t);
		sd_st_header_free(h);
		return -1;
	}
	for (size_t i = 0; i < h->ntensors; i++) {
		const sd_st_info *ti = &h->tensors[i];
		uint64_t at = h->data_offset + ti->begin;
		int rc;
		if (at % ti->elsize == 0) {
			rc = sd_tensor_over(&t[i], s, (size_t)at, ti->dtype, ti->ndim, ti->shape);
		} else { /* misaligned in the file: copy */
			rc = sd_tensor_new(&t[i], ti->dtype, ti->ndim, ti->shape);
			if (rc == 0) memcpy(sd_tensor_data(&t[i]), base + at, (size_t)(ti->end - ti->begin));
		}
		if (rc) {
			char msg[400];
			snprintf(msg, sizeof msg, "%s", sd_geterr());
			sd_seterr("%s: tensor '%.100s': %s", what, ti->name, msg);
			sd_st_tensors_free(t, i);
			sd_storage_release(s);
			sd_st_header_free(h);
			return -1;
		}
	}
	sd_storage_release(s);
	*tensors = t;
	return 0;
}

int sd_st_load(const char *path, sd_st_header *h, sd_tensor **tensors)
{
	memset(h, 0, sizeof *h);
	*tensors = NULL;
	sd_mapping *m = sd_mapping_open(path);
	if (!m) return -1;
	int rc = sd_st_load_mapping(m, path, h, tensors);
	sd_mapping_release(m); /* the tensors' storage keeps it */
	return rc;
}

/* ---- writer ---- */

typedef struct sbuf { char *p; size_t n, cap; int oom; } sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
	if (b->oom) return;
	if (b->cap - b->n < n + 1) {
		size_t nc = b->cap ? b->cap : 256;
		while (nc - b->n < n + 1) nc *= 2;
		char *np = realloc(b->p, nc);
		if (!np) { b->oom = 1; return; }
		b->p = np;
		b->cap = nc;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_json_string(sbuf *b, const char *s, size_t n)
{
	sb_add(b, "\"", 1);
	size_t run = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c != '"' && c != '\\') continue;
		sb_add(b, s + run, i - run);
		char esc[8];
		if (c == '"' || c == '\\') snprintf(esc, sizeof esc, "\\%c", c);
		else snprintf(esc, sizeof esc, "\\u%04x", c);
		sb_str(b, esc);
		run = i + 1;
	}
	sb_add(b, s + run, n - run);
	sb_add(b, "\"", 1);
}

static int cmp_bytes(const char *a, size_t an, const char *b, size_t bn)
{
	int c = memcmp(a, b, an < bn ? an : bn);
	if (c) return c;
	return (an > bn) - (an < bn);
}

static int cmp_entry_name(const void *a, const void *b)
{
	const sd_st_entry *x = *(const sd_st_entry *const *)a, *y = *(const sd_st_entry *const *)b;
	return cmp_bytes(x->name, x->namelen, y->name, y->namelen);
}

static int cmp_entry_layout(const void *a, const void *b)
{
	const sd_st_entry *x = *(const sd_st_entry *const *)a, *y = *(const sd_st_entry *const *)b;
	size_t xs = sd_dtype_size(x->tensor->dtype), ys = sd_dtype_size(y->tensor->dtype);
	if (xs != ys) return xs > ys ? -1 : 1;
	return cmp_bytes(x->name, x->namelen, y->name, y->namelen);
}

static int cmp_kv(const void *a, const void *b)
{
	const sd_st_kv *x = *(const sd_st_kv *const *)a, *y = *(const sd_st_kv *const *)b;
	return cmp_bytes(x->key, x->keylen, y->key, y->keylen);
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t w = write(fd, c, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
		if (w < 0 && errno == EINTR) continue;
		if (w <= 0) return -1;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

int sd_st_save(const char *path, const sd_st_entry *tensors, size_t n, const sd_st_kv *meta, size_t nmeta)
{
	const sd_st_entry **byname = NULL, **bylayout = NULL;
	const sd_st_kv **kvs = NULL;
	uint64_t *offset = NULL; /* indexed like tensors[] */
	sbuf hb = {0};
	char *tmp = NULL;
	int fd = -1, rc = -1;

	byname = malloc((n ? n : 1) * sizeof *byname);
	bylayout = malloc((n ? n : 1) * sizeof *bylayout);
	kvs = malloc((nmeta ? nmeta : 1) * sizeof *kvs);
	offset = malloc((n ? n : 1) * sizeof *offset);
	if (!byname || !bylayout || !kvs || !offset) { sd_seterr("%s: out of memory", path); goto out; }
	for (size_t i = 0; i < n; i++) {
		const sd_st_entry *e = &tensors[i];
		if (!e->tensor || !e->tensor->storage) { sd_seterr("%s: tensor '%.100s' has been released", path, e->name); goto out; }
		if (!sd_json_utf8_valid(e->name, e->namelen)) { sd_seterr("%s: tensor name '%.100s' is not valid UTF-8", path, e->name); goto out; }
		if (e->namelen == 12 && memcmp(e->name, "__metadata__", 12) == 0) {
			sd_seterr("%s: '__metadata__' cannot be a tensor name", path);
			goto out;
		}
		if (!st_name_of(e->tensor->dtype)) { sd_seterr("%s: tensor '%.100s': dtype cannot be saved", path, e->name); goto out; }
		byname[i] = bylayout[i] = e;
	}
	for (size_t i = 0; i < nmeta; i++) {
		if (!sd_json_utf8_valid(meta[i].key, meta[i].keylen) || !sd_json_utf8_valid(meta[i].value, meta[i].valuelen)) {
			sd_seterr("%s: metadata '%.100s' is not valid UTF-8", path, meta[i].key);
			goto out;
		}
		kvs[i] = &meta[i];
	}
	qsort(byname, n, sizeof *byname, cmp_entry_name);
	qsort(bylayout, n, sizeof *bylayout, cmp_entry_layout);
	qsort(kvs, nmeta, sizeof *kvs, cmp_kv);
	for (size_t i = 1; i < n; i++)
		if (!cmp_entry_name(&byname[i - 1], &byname[i])) { sd_seterr("%s: duplicate tensor name '%.100s'", path, byname[i]->name); goto out; }
	for (size_t i = 1; i < nmeta; i++)
		if (!cmp_kv(&kvs[i - 1], &kvs[i])) { sd_seterr("%s: duplicate metadata key '%.100s'", path, kvs[i]->key); goto out; }

	/* data offsets in layout order, indexed like tensors[] */
	uint64_t pos = 0;
	for (size_t i = 0; i < n; i++) {
		const sd_st_entry *e = bylayout[i];
		offset[e - tensors] = pos;
		pos += (uint64_t)sd_tensor_numel(e->tensor) * sd_dtype_size(e->tensor->dtype);
	}

	sb_str(&hb, "{");
	if (nmeta) {
		sb_str(&hb, "\"__metadata__\":{");
		for (size_t i = 0; i < nmeta; i++) {
			if (i) sb_str(&hb, ",");
			sb_json_string(&hb, kvs[i]->key, kvs[i]->keylen);
			sb_str(&hb, ":");
			sb_json_string(&hb, kvs[i]->value, kvs[i]->valuelen);
		}
		sb_str(&hb, "}");
	}
	for (size_t i = 0; i < n; i++) {
		const sd_tensor *t = byname[i]->tensor;
		char num[64];
		if (i || nmeta) sb_str(&hb, ",");
		sb_json_string(&hb, byname[i]->name, byname[i]->namelen);
		sb_str(&hb, ":{\"dtype\":\"");
		sb_str(&hb, st_name_of(t->dtype));
		sb_str(&hb, "\",\"shape\":[");
		for (int d = 0; d < t->ndim; d++) {
			snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)t->shape[d]);
			sb_str(&hb, num);
		}
		uint64_t nb = (uint64_t)sd_tensor_numel(t) * sd_dtype_size(t->dtype);
		snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (ull)offset[byname[i] - tensors],
		         (ull)(offset[byname[i] - tensors] + nb));
		sb_str(&hb, num);
	}
	sb_str(&hb, "}");
	while ((8 + hb.n) % 8) sb_str(&hb, " ");
	if (hb.oom) { sd_seterr("%s: out of memory", path); goto out; }
	if (hb.n > SD_ST_MAX_HEADER) { sd_seterr("%s: header of %zu bytes exceeds the limit", path, hb.n); goto out; }

	size_t plen = strlen(path);
	tmp = malloc(plen + 16);
	if (!tmp) { sd_seterr("%s: out of memory", path); goto out; }
	memcpy(tmp, path, plen);
	memcpy(tmp + plen, ".tmp-XXXXXX", 12);
	fd = mkstemp(tmp);
	if (fd < 0) {
		sd_seterr("cannot create a temporary file next to %s: %s", path, strerror(errno));
		free(tmp);
		tmp = NULL;
		goto out;
	}
	mode_t um = umask(0);
	umask(um);
	if (fchmod(fd, 0666 & ~um) != 0) { sd_seterr("%s: chmod: %s", tmp, strerror(errno)); goto out; }
	unsigned char lenb[8];
	for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)((uint64_t)hb.n >> (8 * i));
	if (write_all(fd, lenb, 8) || write_all(fd, hb.p, hb.n)) { sd_seterr("cannot write %s: %s", tmp, strerror(errno)); goto out; }
	for (size_t i = 0; i < n; i++) {
		sd_tensor c;
		if (sd_tensor_contiguous(bylayout[i]->tensor, &c) != 0) {
			char msg[300];
			snprintf(msg, sizeof msg, "%s", sd_geterr());
			sd_seterr("%s: tensor '%.100s': %s", path, bylayout[i]->name, msg);
			goto out;
		}
		size_t nb = (size_t)sd_tensor_numel(&c) * sd_dtype_size(c.dtype);
		int w = nb ? write_all(fd, sd_tensor_data(&c), nb) : 0;
		sd_tensor_release(&c);
		if (w) { sd_seterr("cannot write %s: %s", tmp, strerror(errno)); goto out; }
	}
	if (fsync(fd) != 0) { sd_seterr("cannot sync %s: %s", tmp, strerror(errno)); goto out; }
	int cr = close(fd);
	fd = -1;
	if (cr != 0) { sd_seterr("cannot write %s: %s", tmp, strerror(errno)); goto out; }
	if (rename(tmp, path) != 0) { sd_seterr("cannot rename %s to %s: %s", tmp, path, strerror(errno)); goto out; }
	free(tmp);
	tmp = NULL;
	/* make the rename durable (best effort) */
	{
		const char *slash = strrchr(path, '/');
		char *dir = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : strdup(".");
		int dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
		if (dfd >= 0) {
			(void)fsync(dfd);
			close(dfd);
		}
		free(dir);
	}
	rc = 0;
out:
	if (fd >= 0) close(fd);
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	free(hb.p);
	free(byname);
	free(bylayout);
	free(kvs);
	free(offset);
	return rc;
}
