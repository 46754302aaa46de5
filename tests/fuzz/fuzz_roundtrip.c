/* libFuzzer harness for the writer: every file the reader accepts (with supported dtypes) is
 * saved again with sd_st_save and read back; names, dtypes, shapes, bytes and metadata must
 * survive, and the rewritten file must itself parse. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "safetensors.h"
#include "sd_error.h"

static int memfd = -1;
static char out_path[64];

static void invariant(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "invariant violated: %s (%s)\n", what, sd_geterr());
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (memfd < 0) {
		memfd = memfd_create("fuzz_roundtrip", MFD_CLOEXEC);
		snprintf(out_path, sizeof out_path, "/dev/shm/sdlua-fuzz-rt-%d.safetensors", (int)getpid());
	}
	if (memfd < 0 || ftruncate(memfd, 0) != 0 || pwrite(memfd, data, size, 0) != (ssize_t)size) abort();
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", memfd);
	sd_mapping *m = sd_mapping_open(path);
	if (!m) abort();
	sd_st_header h;
	sd_tensor *t;
	if (sd_st_load_mapping(m, "fuzz", &h, &t) != 0) {
		sd_mapping_release(m);
		return 0;
	}
	sd_mapping_release(m);
	sd_st_entry *e = calloc(h.ntensors + 1, sizeof *e);
	sd_st_kv *kv = calloc(h.nmeta + 1, sizeof *kv);
	for (size_t i = 0; i < h.ntensors; i++) e[i] = (sd_st_entry){h.tensors[i].name, h.tensors[i].namelen, &t[i]};
	for (size_t i = 0; i < h.nmeta; i++)
		kv[i] = (sd_st_kv){h.meta[i].key, h.meta[i].keylen, h.meta[i].value, h.meta[i].valuelen};
	invariant(sd_st_save(out_path, e, h.ntensors, kv, h.nmeta) == 0, "an accepted file cannot be saved");
	sd_st_header h2;
	sd_tensor *t2;
	invariant(sd_st_load(out_path, &h2, &t2) == 0, "a saved file does not load");
	invariant(h2.ntensors == h.ntensors && h2.nmeta == h.nmeta, "counts differ");
	invariant(h2.data_offset % 8 == 0, "header not padded");
	for (size_t i = 0; i < h2.ntensors; i++) {
		size_t j;
		for (j = 0; j < h.ntensors; j++)
			if (h.tensors[j].namelen == h2.tensors[i].namelen && !memcmp(h.tensors[j].name, h2.tensors[i].name, h2.tensors[i].namelen)) break;
		invariant(j < h.ntensors, "name lost");
		if (i) {
			const sd_st_info *a = &h2.tensors[i - 1], *b = &h2.tensors[i];
			int c = memcmp(a->name, b->name, a->namelen < b->namelen ? a->namelen : b->namelen);
			invariant(c < 0 || (c == 0 && a->namelen < b->namelen), "names not sorted");
		}
		invariant(t2[i].dtype == t[j].dtype && sd_tensor_same_shape(&t2[i], &t[j]), "dtype or shape differs");
		size_t nb = (size_t)sd_tensor_numel(&t[j]) * sd_dtype_size(t[j].dtype);
		invariant(memcmp(sd_tensor_data(&t2[i]), sd_tensor_data(&t[j]), nb) == 0, "bytes differ");
		invariant(nb == 0 || t2[i].storage->map != NULL, "rewritten tensor misaligned");
	}
	for (size_t i = 0; i < h2.nmeta; i++) {
		size_t j;
		for (j = 0; j < h.nmeta; j++)
			if (h.meta[j].keylen == h2.meta[i].keylen && !memcmp(h.meta[j].key, h2.meta[i].key, h2.meta[i].keylen)) break;
		invariant(j < h.nmeta && h.meta[j].valuelen == h2.meta[i].valuelen &&
		              !memcmp(h.meta[j].value, h2.meta[i].value, h2.meta[i].valuelen),
		          "metadata differs");
	}
	sd_st_tensors_free(t2, h2.ntensors);
	sd_st_header_free(&h2);
	sd_st_tensors_free(t, h.ntensors);
	sd_st_header_free(&h);
	free(e);
	free(kv);
	unlink(out_path);
	return 0;
}
