/* Elementwise binary arithmetic with numpy broadcasting, clamp and where, over f32. */
#ifndef SD_ELEMENTWISE_H
#define SD_ELEMENTWISE_H

#include <stdint.h>
#include "tensor.h"

typedef enum sd_binop { SD_BIN_ADD, SD_BIN_SUB, SD_BIN_MUL, SD_BIN_DIV, SD_BIN_POW, SD_BINOP_COUNT } sd_binop;

const char *sd_binop_name(sd_binop op); /* "add", ... */

/* Raw kernels over n elements with element strides (0 broadcasts one value; 1 is the fast path). */
void sd_binary_f32(sd_binop op, const float *a, int64_t sa, const float *b, int64_t sb, float *y, int64_t sy, int64_t n);
void sd_clamp_f32(const float *x, int64_t sx, float *y, int64_t sy, int64_t n, float lo, float hi);
/* y = c != 0 ? a : b */
void sd_where_f32(const float *c, int64_t sc, const float *a, int64_t sa, const float *b, int64_t sb,
                  float *y, int64_t sy, int64_t n);

/* Tensor level. Outputs are new contiguous f32 tensors of the broadcast shape; inputs must be f32.
 * A scalar operand: sd_binary_scalar computes x op s, or s op x when scalar_first. */
int sd_binary(sd_binop op, const sd_tensor *a, const sd_tensor *b, sd_tensor *out);
int sd_binary_scalar(sd_binop op, const sd_tensor *x, float s, int scalar_first, sd_tensor *out);
/* In place on self (f32, any strides): b must broadcast to self's shape. Overlap of b with self
 * other than the identical view is not detected. */
int sd_binary_(sd_binop op, sd_tensor *self, const sd_tensor *b);
int sd_binary_scalar_(sd_binop op, sd_tensor *self, float s);
/* clamp to [lo, hi]; NAN for an absent bound. NaN inputs stay NaN. */
int sd_clamp(const sd_tensor *x, float lo, float hi, sd_tensor *out);
/* cond (any dtype; nonzero is true), a, b broadcast together; a and b f32. A NULL a or b means the
 * scalar as / bs. */
int sd_where(const sd_tensor *cond, const sd_tensor *a, float as, const sd_tensor *b, float bs, sd_tensor *out);

/* Runs fn over every row of an sd_iter built on ops (broadcast to shape), in parallel when the
 * work is large. fn gets the operands' pointers, their element strides and the row length. */
typedef void (*sd_rowfn)(char **p, const int64_t *stride, int64_t n, const void *ctx);
int sd_foreach(int nops, const sd_tensor *const *ops, int ndim, const int64_t *shape, sd_rowfn fn, const void *ctx);

#endif
