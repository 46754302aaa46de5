/* libFuzzer harness for the safetensors reader: parses arbitrary bytes as a file, and when the
 * header is accepted also loads the tensors through a real mapping (a memfd) and checks that
 * every tensor lies inside the file and that accepted ranges do not overlap. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "safetensors.h"
#include "sd_error.h"

static int memfd = -1;

static void invariant(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "invariant violated: %s\n", what);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sd_st_header h;
	if (sd_st_parse(data, size, size, "fuzz", &h) != 0) {
		invariant(strlen(sd_geterr()) > 0, "error without a message");
		return 0;
	}
	for (size_t i = 0; i < h.ntensors; i++) {
		const sd_st_info *a = &h.tensors[i];
		invariant(a->begin <= a->end && a->end <= h.data_size, "range outside the data section");
		invariant(h.data_offset + h.data_size == size, "sizes do not add up");
		for (size_t j = 0; j < i; j++) {
			const sd_st_info *b = &h.tensors[j];
			if (a->end > a->begin && b->end > b->begin)
				invariant(a->end <= b->begin || b->end <= a->begin, "overlapping ranges accepted");
			invariant(a->namelen != b->namelen || memcmp(a->name, b->name, a->namelen) != 0, "duplicate name accepted");
		}
	}
	sd_st_header_free(&h);

	/* the load path over a real mapping */
	if (memfd < 0) memfd = memfd_create("fuzz_safetensors", MFD_CLOEXEC);
	if (memfd < 0 || ftruncate(memfd, 0) != 0 || pwrite(memfd, data, size, 0) != (ssize_t)size) abort();
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", memfd);
	sd_mapping *m = sd_mapping_open(path);
	if (!m) abort();
	sd_tensor *t;
	if (sd_st_load_mapping(m, "fuzz", &h, &t) == 0) {
		const unsigned char *base = sd_mapping_data(m);
		unsigned sum = 0;
		for (size_t i = 0; i < h.ntensors; i++) {
			size_t nb = (size_t)sd_tensor_numel(&t[i]) * sd_dtype_size(t[i].dtype);
			const unsigned char *p = sd_tensor_data(&t[i]);
			int in_file = p >= base && p + nb <= base + size;
			int copied = t[i].storage->map == NULL;
			invariant(in_file || copied, "tensor data outside the file");
			invariant(nb == h.tensors[i].end - h.tensors[i].begin, "tensor size differs from its range");
			invariant(memcmp(p, base + h.data_offset + h.tensors[i].begin, nb) == 0, "tensor bytes differ");
			for (size_t k = 0; k < nb; k++) sum += p[k];
		}
		(void)sum;
		sd_st_tensors_free(t, h.ntensors);
		sd_st_header_free(&h);
	}
	sd_mapping_release(m);
	return 0;
}
