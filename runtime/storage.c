#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "sd_error.h"
#include "storage.h"

struct sd_mapping {
	void *base;
	size_t size;
	long refcount;
};

/* The pool keeps freed heap blocks for reuse; a loop that allocates the same shapes every
 * step then reuses them (no page faults, no zeroing by the kernel). It holds at most POOL_SLOTS
 * blocks and POOL_MAX_BYTES bytes, each at most POOL_MAX_BLOCK.
 *
 * A request takes the smallest pooled block of its size up to twice that, so a step whose
 * sizes vary still finds room among the blocks of the last one.
 *
 * The pool keeps the peak planned: heap bytes held (live + pooled) stay within the highest live
 * bytes seen since the last sd_memory_trim, plus a slack of half that (at most POOL_SLACK_MAX).
 * A request that finds no block gives back pooled blocks, least recently pooled first, only for
 * what would go past that bound, so blocks sized for an earlier phase make room for the new
 * sizes instead of adding to them. The slack lets one U-Net step keep the blocks of all its
 * sizes: without it (giving back a request's size at every miss, as an earlier version did),
 * the 512x512 U-Net faulted in ~0.5 GB afresh per step, its 84 MB feed-forward outputs at
 * every call, ~1/4 of those calls' time.
 *
 * (Transparent huge pages for large blocks were tried: on this VM a first touch of a fresh
 * 128 MiB block took 4x longer with MADV_HUGEPAGE, so blocks are plain 64-byte aligned.) */
#define POOL_SLOTS 256
#define POOL_MAX_BYTES ((size_t)1 << 30)
#define POOL_MAX_BLOCK ((size_t)512 << 20)
#define POOL_SLACK_MAX ((size_t)128 << 20)
#define OWN_MAPPING_MIN ((size_t)1 << 20)
static struct { void *p; size_t n; unsigned long long age; } pool[POOL_SLOTS];
/* live_bytes: the tensors' own sizes (what sd.memory reports); live_blocks: the heap blocks
 * holding them, which may be larger (what the pool's bound counts) */
static size_t pool_bytes, live_bytes, peak_bytes, live_blocks, held_limit;
static unsigned long long pool_clock;

static size_t block_size(size_t nbytes)
{
	size_t n = nbytes ? nbytes : 1;
	return (n + 63) & ~(size_t)63;
}

/* the slot of the least recently pooled block, or -1 when the pool is empty */
static int pool_oldest(void)
{
	int oldest = -1;
	for (int i = 0; i < POOL_SLOTS; i++)
		if (pool[i].p && (oldest < 0 || pool[i].age < pool[oldest].age)) oldest = i;
	return oldest;
}

/* gives pooled block i back to the system */
static void pool_drop(int i)
{
	free(pool[i].p);
	pool[i].p = NULL;
	pool_bytes -= pool[i].n;
}

/* frees the least recently pooled blocks until at least `want` bytes were given back (or the
 * pool is empty) */
static void pool_evict(size_t want)
{
	size_t freed = 0;
	int i;
	while (freed < want && (i = pool_oldest()) >= 0) {
		freed += pool[i].n;
		pool_drop(i);
	}
}

/* A block of at least n bytes: the smallest pooled one up to twice that, else a new one. */
static void *block_get(size_t n, size_t *capacity)
{
	int best = -1;
	for (int i = 0; i < POOL_SLOTS; i++)
		if (pool[i].p && pool[i].n >= n && pool[i].n / 2 <= n &&
		    (best < 0 || pool[i].n < pool[best].n))
			best = i;
	if (best >= 0) {
		void *p = pool[best].p;
		*capacity = pool[best].n;
		pool[best].p = NULL;
		pool_bytes -= *capacity;
		return p;
	}
	*capacity = n;
	size_t limit = live_blocks + n > held_limit ? live_blocks + n : held_limit;
	limit += limit / 2 < POOL_SLACK_MAX ? limit / 2 : POOL_SLACK_MAX;
	if (live_blocks + pool_bytes + n > limit) pool_evict(live_blocks + pool_bytes + n - limit);
	void *p = NULL;
	if (posix_memalign(&p, 64, n) != 0) {
		sd_memory_trim();
		if (posix_memalign(&p, 64, n) != 0) return NULL;
	}
	return p;
}

static void block_put(void *p, size_t n)
{
	if (n <= POOL_MAX_BLOCK) {
		if (pool_bytes + n > POOL_MAX_BYTES) pool_evict(pool_bytes + n - POOL_MAX_BYTES);
		int slot = -1;
		for (int i = 0; i < POOL_SLOTS && slot < 0; i++)
			if (!pool[i].p) slot = i;
		if (slot < 0) { /* every slot taken: the oldest block goes */
			slot = pool_oldest();
			pool_drop(slot);
		}
		pool[slot].p = p;
		pool[slot].n = n;
		pool[slot].age = ++pool_clock;
		pool_bytes += n;
		return;
	}
	free(p);
}

/* Blocks of 1 MiB and more get mappings of their own (a fixed malloc mmap threshold; glibc's
 * default raises it up to 32 MiB as large blocks are freed): freeing one then gives its pages
 * back at once. With the default, the U-Net's freed activations stayed in malloc's arenas (~0.4
 * GB of RSS at 512x512) while the VAE decoder faulted in its own. The pool is the cache. */
static void tune_malloc(void)
{
	static int done;
	if (done) return;
	done = 1;
	mallopt(M_MMAP_THRESHOLD, (int)OWN_MAPPING_MIN);
}

static sd_storage *heap_storage(size_t nbytes, int zero)
{
	tune_malloc();
	size_t n = block_size(nbytes);
	if (n < nbytes) { sd_seterr("allocation of %zu bytes overflows", nbytes); return NULL; }
	sd_storage *s = malloc(sizeof *s);
	size_t capacity = 0;
	void *p = s ? block_get(n, &capacity) : NULL;
	if (!p) {
		free(s);
		sd_seterr("out of memory allocating %zu bytes", nbytes);
		return NULL;
	}
	if (zero) memset(p, 0, n);
	s->data = p;
	s->nbytes = nbytes;
	s->refcount = 1;
	s->capacity = capacity;
	s->map = NULL;
	live_bytes += n;
	if (live_bytes > peak_bytes) peak_bytes = live_bytes;
	live_blocks += capacity;
	if (live_blocks > held_limit) held_limit = live_blocks;
	return s;
}

sd_storage *sd_storage_new(size_t nbytes) { return heap_storage(nbytes, 0); }
sd_storage *sd_storage_new_zeroed(size_t nbytes) { return heap_storage(nbytes, 1); }

void sd_storage_retain(sd_storage *s) { s->refcount++; }

void sd_storage_release(sd_storage *s)
{
	if (!s || --s->refcount > 0) return;
	if (s->map) {
		sd_mapping_release(s->map);
	} else {
		live_bytes -= block_size(s->nbytes);
		live_blocks -= s->capacity;
		block_put(s->data, s->capacity);
	}
	free(s);
}

void sd_storage_drop_pages(sd_storage *s)
{
	if (!s || !s->map || s->nbytes == 0) return;
	uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t a = ((uintptr_t)s->data + pg - 1) & ~(pg - 1);
	uintptr_t b = ((uintptr_t)s->data + s->nbytes) & ~(pg - 1);
	if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

sd_mapping *sd_mapping_open(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) { sd_seterr("cannot open %s: %s", path, strerror(errno)); return NULL; }
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		sd_seterr("%s is not a regular file", path);
		return NULL;
	}
	sd_mapping *m = calloc(1, sizeof *m);
	if (!m) { close(fd); sd_seterr("out of memory"); return NULL; }
	m->size = (size_t)st.st_size;
	m->refcount = 1;
	if (m->size > 0) {
		m->base = mmap(NULL, m->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
		if (m->base == MAP_FAILED) {
			close(fd);
			free(m);
			sd_seterr("cannot map %s: %s", path, strerror(errno));
			return NULL;
		}
	}
	close(fd);
	return m;
}

const void *sd_mapping_data(const sd_mapping *m) { return m->base; }
size_t sd_mapping_size(const sd_mapping *m) { return m->size; }
void sd_mapping_retain(sd_mapping *m) { m->refcount++; }

void sd_mapping_release(sd_mapping *m)
{
	if (!m || --m->refcount > 0) return;
	if (m->size) munmap(m->base, m->size);
	free(m);
}

sd_storage *sd_storage_from_mapping(sd_mapping *m, size_t offset, size_t nbytes)
{
	if (offset > m->size || nbytes > m->size - offset) {
		sd_seterr("byte range [%zu, %zu) lies outside the mapped file of %zu bytes", offset,
		          offset + nbytes, m->size);
		return NULL;
	}
	sd_storage *s = malloc(sizeof *s);
	if (!s) { sd_seterr("out of memory"); return NULL; }
	s->data = (char *)m->base + offset;
	s->nbytes = nbytes;
	s->capacity = 0;
	s->refcount = 1;
	s->map = m;
	sd_mapping_retain(m);
	return s;
}

sd_memory_stats sd_memory(void)
{
	return (sd_memory_stats){live_bytes, peak_bytes, pool_bytes};
}

void sd_memory_reset_peak(void) { peak_bytes = live_bytes; }

void sd_memory_trim(void)
{
	for (int i = 0; i < POOL_SLOTS; i++)
		if (pool[i].p) pool_drop(i);
	held_limit = live_blocks;
	malloc_trim(0); /* and the allocator's own free memory, where it can */
}
