/* Storage: a refcounted block of bytes that tensors view. Either heap memory (64-byte aligned,
 * recycled through a small pool so that a sampling loop does not fault fresh pages each step)
 * or a range of a memory-mapped file (zero-copy weights). Refcounts are changed only by the
 * thread that owns the Lua state. */
#ifndef SD_STORAGE_H
#define SD_STORAGE_H

#include <stddef.h>
#include <stdint.h>

typedef struct sd_mapping sd_mapping;

typedef struct sd_storage {
	void *data;
	size_t nbytes;
	size_t capacity; /* bytes of the heap block (a pooled block may be larger than nbytes) */
	long refcount;
	sd_mapping *map; /* the file this storage lies in, or NULL for heap memory */
} sd_storage;

sd_storage *sd_storage_new(size_t nbytes);        /* uninitialised; NULL + sd_seterr when out of memory */
sd_storage *sd_storage_new_zeroed(size_t nbytes);
void sd_storage_retain(sd_storage *s);
void sd_storage_release(sd_storage *s);
/* A storage in a mapped file: gives the resident pages lying wholly inside it back (they are
 * read from the file again on use, so changes written into them are lost). Heap: nothing. */
void sd_storage_drop_pages(sd_storage *s);

/* Maps a whole file (private, copy-on-write: writing to a weight never changes the file). */
sd_mapping *sd_mapping_open(const char *path);
const void *sd_mapping_data(const sd_mapping *m);
size_t sd_mapping_size(const sd_mapping *m);
void sd_mapping_retain(sd_mapping *m);
void sd_mapping_release(sd_mapping *m);
/* A storage over bytes [offset, offset + nbytes) of the mapping; keeps the mapping alive. */
sd_storage *sd_storage_from_mapping(sd_mapping *m, size_t offset, size_t nbytes);

/* Heap bytes held by live storages now, at their peak since the last reset, and kept in the
 * pool for reuse. Mapped files are not counted (the page cache holds them). */
typedef struct sd_memory_stats { size_t current, peak, pooled; } sd_memory_stats;
sd_memory_stats sd_memory(void);
void sd_memory_reset_peak(void);
void sd_memory_trim(void); /* returns pooled blocks to the system */

#endif
