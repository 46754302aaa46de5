/* safetensors files: an 8-byte little-endian header length N, N bytes of JSON header (tensor
 * name -> {dtype, shape, data_offsets}, optional "__metadata__" of string values), then the data
 * section. The reader validates everything before it trusts an offset; loading maps the file
 * and gives zero-copy tensors in their stored dtype. The writer is atomic. No Lua here. */
#ifndef SD_SAFETENSORS_H
#define SD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include "storage.h"
#include "tensor.h"

#define SD_ST_MAX_HEADER ((uint64_t)100000000) /* bytes of JSON header accepted */

typedef struct sd_st_info {
	char *name;             /* NUL-terminated; may contain NUL (\u0000), so use namelen */
	size_t namelen;
	char file_dtype[12];    /* as written in the file: "F32", "BF16", "F64", ... */
	int supported;          /* 1 when dtype below is meaningful */
	sd_dtype dtype;
	size_t elsize;          /* bytes per element of file_dtype */
	int ndim;
	int64_t shape[SD_MAX_DIMS];
	uint64_t begin, end;    /* byte range within the data section */
} sd_st_info;

typedef struct sd_st_meta {
	char *key, *value;      /* NUL-terminated; lengths for embedded NULs */
	size_t keylen, valuelen;
} sd_st_meta;

typedef struct sd_st_header {
	size_t ntensors;
	sd_st_info *tensors;    /* in the header's order */
	size_t nmeta;
	sd_st_meta *meta;
	uint64_t header_len;    /* N */
	uint64_t data_offset;   /* 8 + N: where the data section starts in the file */
	uint64_t data_size;     /* file size - 8 - N */
} sd_st_header;

/* Parses and validates the header. buf holds the first buflen bytes of a file of file_size
 * bytes (buflen >= 8 + N is needed, the data section need not be there); `what` (the path)
 * prefixes error messages. 0, or -1 after sd_seterr with *h zeroed. */
int sd_st_parse(const void *buf, size_t buflen, uint64_t file_size, const char *what, sd_st_header *h);
void sd_st_header_free(sd_st_header *h);
/* Reads and validates only the header of a file (no tensors, no mapping). */
int sd_st_read_header(const char *path, sd_st_header *h);

/* Validates the mapped file and creates one tensor per header entry (same order) in *tensors
 * (free with sd_st_tensors_free). Tensors view the mapping without copying, except one whose
 * data is not aligned to its element size (copied). An unsupported dtype is an error naming
 * the tensor. */
int sd_st_load_mapping(sd_mapping *m, const char *what, sd_st_header *h, sd_tensor **tensors);
int sd_st_load(const char *path, sd_st_header *h, sd_tensor **tensors);
void sd_st_tensors_free(sd_tensor *tensors, size_t n);

/* Writes tensors (any dtype, any strides) and string metadata. Names are sorted in the header;
 * the data is laid out by element size (largest first) then name, so that every tensor stays
 * aligned; the header is padded with spaces to a multiple of 8 bytes. Atomic: a temporary file
 * in the same directory, fsync, rename; on failure the target is untouched and the temporary
 * removed. Names must be unique, valid UTF-8 and not "__metadata__". */
typedef struct sd_st_entry { const char *name; size_t namelen; const sd_tensor *tensor; } sd_st_entry;
typedef struct sd_st_kv { const char *key; size_t keylen; const char *value; size_t valuelen; } sd_st_kv;
int sd_st_save(const char *path, const sd_st_entry *tensors, size_t n, const sd_st_kv *meta, size_t nmeta);

#endif
