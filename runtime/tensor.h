/* Tensors: a dtype, a shape and strides over a refcounted storage (Torch7's split: this library
 * knows nothing of Lua). An sd_tensor is a small value; copying one means sharing its storage,
 * which sd_tensor_share does with the refcount. Dimensions are 0-based here; the Lua binding
 * presents them 1-based. Every function returns 0 (or a pointer) on success and -1 (or NULL)
 * after sd_seterr on failure, with *dst untouched. Messages count dimensions and indices from 1,
 * as the user sees them. */
#ifndef SD_TENSOR_H
#define SD_TENSOR_H

#include <stdint.h>
#include "dtype.h"
#include "storage.h"

#define SD_MAX_DIMS 8

typedef struct sd_tensor {
	sd_storage *storage; /* NULL once released */
	int64_t offset;      /* elements from storage->data to element [0,...,0] */
	int ndim;
	sd_dtype dtype;
	int64_t shape[SD_MAX_DIMS];
	int64_t stride[SD_MAX_DIMS]; /* elements; 0 in broadcast dimensions */
} sd_tensor;

/* shape helpers, overflow-checked */
int sd_shape_numel(int ndim, const int64_t *shape, int64_t *numel);
int sd_shape_check(int ndim, const int64_t *shape); /* 0 <= ndim <= 8, sizes >= 0, numel*16 fits */
/* "(2, 4, 64, 64)" into buf */
const char *sd_shape_str(int ndim, const int64_t *shape, char *buf, size_t size);
#define SD_SHAPE_STR(t) sd_shape_str((t)->ndim, (t)->shape, (char[160]){0}, 160)

int sd_tensor_new(sd_tensor *t, sd_dtype dt, int ndim, const int64_t *shape);   /* uninitialised */
int sd_tensor_zeros(sd_tensor *t, sd_dtype dt, int ndim, const int64_t *shape);
/* a contiguous tensor over storage bytes [byte_offset, ...); checks that it fits */
int sd_tensor_over(sd_tensor *t, sd_storage *s, size_t byte_offset, sd_dtype dt, int ndim, const int64_t *shape);
void sd_tensor_release(sd_tensor *t);
void sd_tensor_share(sd_tensor *dst, const sd_tensor *src);

int64_t sd_tensor_numel(const sd_tensor *t);
int sd_tensor_is_contiguous(const sd_tensor *t);
void *sd_tensor_data(const sd_tensor *t);
int sd_tensor_same_shape(const sd_tensor *a, const sd_tensor *b);

/* Views (share storage). dim arguments may be negative (from the end). */
int sd_tensor_view(const sd_tensor *src, sd_tensor *dst, int ndim, const int64_t *shape); /* one -1 inferred */
int sd_tensor_reshape(const sd_tensor *src, sd_tensor *dst, int ndim, const int64_t *shape); /* view or copy */
int sd_tensor_permute(const sd_tensor *src, sd_tensor *dst, int ndim, const int *perm);
int sd_tensor_transpose(const sd_tensor *src, sd_tensor *dst, int d0, int d1);
int sd_tensor_narrow(const sd_tensor *src, sd_tensor *dst, int dim, int64_t start, int64_t length);
int sd_tensor_select(const sd_tensor *src, sd_tensor *dst, int dim, int64_t index);
int sd_tensor_squeeze(const sd_tensor *src, sd_tensor *dst, int dim); /* dim < -ndim: all size-1 dims */
int sd_tensor_unsqueeze(const sd_tensor *src, sd_tensor *dst, int dim);
int sd_tensor_expand(const sd_tensor *src, sd_tensor *dst, int ndim, const int64_t *shape); /* -1 keeps */

/* Copies. */
int sd_tensor_contiguous(const sd_tensor *src, sd_tensor *dst); /* shares when already contiguous */
int sd_tensor_to(const sd_tensor *src, sd_tensor *dst, sd_dtype dt); /* new contiguous tensor */
int sd_tensor_clone(const sd_tensor *src, sd_tensor *dst);
/* dst[...] = src[...] converting dtype; src must broadcast to dst's shape. */
int sd_tensor_copy(sd_tensor *dst, const sd_tensor *src);

/* Broadcasting (numpy rules). */
int sd_broadcast_shape(int na, const int64_t *a, int nb, const int64_t *b, int *nout, int64_t *out);

/* Strided iteration over up to SD_ITER_MAXOPS tensors broadcast to one shape. Dimensions are
 * coalesced where memory allows; what is left is walked as rows of `inner` elements, each
 * operand stepping inner_stride[k] elements. Rows are independent: they can be run in
 * parallel, computing each row's pointers with sd_iter_row. */
#define SD_ITER_MAXOPS 4
typedef struct sd_iter {
	int nops, ndim;            /* ndim of the outer (row) space */
	int64_t rows, inner;
	int64_t shape[SD_MAX_DIMS];
	int64_t stride[SD_ITER_MAXOPS][SD_MAX_DIMS];
	int64_t inner_stride[SD_ITER_MAXOPS];
	char *data[SD_ITER_MAXOPS];
	size_t elsize[SD_ITER_MAXOPS];
} sd_iter;
int sd_iter_init(sd_iter *it, int nops, const sd_tensor *const *ops, int ndim, const int64_t *shape);
void sd_iter_row(const sd_iter *it, int64_t row, char **ptrs);

#endif
