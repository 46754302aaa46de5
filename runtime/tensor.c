#include <stdio.h>
#include <string.h>
#include "sd_error.h"
#include "tensor.h"

/* ---- shapes ---------------------------------------------------------------------------- */

int sd_shape_numel(int ndim, const int64_t *shape, int64_t *numel)
{
	int64_t n = 1;
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0) return sd_seterr("negative size %lld in dimension %d", (long long)shape[i], i + 1);
		if (__builtin_mul_overflow(n, shape[i], &n)) return sd_seterr("shape %s has too many elements",
		                                                                 sd_shape_str(ndim, shape, (char[160]){0}, 160));
	}
	*numel = n;
	return 0;
}

int sd_shape_check(int ndim, const int64_t *shape)
{
	if (ndim < 0 || ndim > SD_MAX_DIMS) return sd_seterr("%d dimensions (at most %d)", ndim, SD_MAX_DIMS);
	int64_t n, bytes;
	if (sd_shape_numel(ndim, shape, &n) != 0) return -1;
	if (__builtin_mul_overflow(n, (int64_t)16, &bytes))
		return sd_seterr("shape %s has too many elements", sd_shape_str(ndim, shape, (char[160]){0}, 160));
	return 0;
}

const char *sd_shape_str(int ndim, const int64_t *shape, char *buf, size_t size)
{
	size_t n = 0;
	n += (size_t)snprintf(buf + n, size - n, "(");
	for (int i = 0; i < ndim && n < size; i++)
		n += (size_t)snprintf(buf + n, size - n, i ? ", %lld" : "%lld", (long long)shape[i]);
	if (n < size) n += (size_t)snprintf(buf + n, size - n, ndim == 1 ? ",)" : ")");
	return buf;
}

/* ---- creation and lifetime ------------------------------------------------------------- */

static void set_contiguous_strides(sd_tensor *t)
{
	int64_t s = 1;
	for (int i = t->ndim - 1; i >= 0; i--) {
		t->stride[i] = s;
		s *= t->shape[i] ? t->shape[i] : 1;
	}
}

static int make(sd_tensor *t, sd_dtype dt, int ndim, const int64_t *shape, int zero)
{
	int64_t n;
	if (dt < 0 || dt >= SD_NDTYPES) return sd_seterr("invalid dtype %d", (int)dt);
	if (sd_shape_check(ndim, shape) != 0 || sd_shape_numel(ndim, shape, &n) != 0) return -1;
	size_t bytes = (size_t)n * sd_dtype_size(dt);
	sd_storage *s = zero ? sd_storage_new_zeroed(bytes) : sd_storage_new(bytes);
	if (!s) return -1;
	memset(t, 0, sizeof *t);
	t->storage = s;
	t->dtype = dt;
	t->ndim = ndim;
	memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
	set_contiguous_strides(t);
	return 0;
}

int sd_tensor_new(sd_tensor *t, sd_dtype dt, int ndim, const int64_t *shape) { return make(t, dt, ndim, shape, 0); }
int sd_tensor_zeros(sd_tensor *t, sd_dtype dt, int ndim, const int64_t *shape) { return make(t, dt, ndim, shape, 1); }

int sd_tensor_over(sd_tensor *t, sd_storage *s, size_t byte_offset, sd_dtype dt, int ndim, const int64_t *shape)
{
	int64_t n;
	if (sd_shape_check(ndim, shape) != 0 || sd_shape_numel(ndim, shape, &n) != 0) return -1;
	size_t es = sd_dtype_size(dt), bytes = (size_t)n * es;
	if (byte_offset % es != 0) return sd_seterr("byte offset %zu is not a multiple of the %s element size", byte_offset, sd_dtype_name(dt));
	if (byte_offset > s->nbytes || bytes > s->nbytes - byte_offset)
		return sd_seterr("%s %s needs %zu bytes at offset %zu but the storage has %zu", sd_dtype_name(dt),
		                 sd_shape_str(ndim, shape, (char[160]){0}, 160), bytes, byte_offset, s->nbytes);
	memset(t, 0, sizeof *t);
	sd_storage_retain(s);
	t->storage = s;
	t->offset = (int64_t)(byte_offset / es);
	t->dtype = dt;
	t->ndim = ndim;
	memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
	set_contiguous_strides(t);
	return 0;
}

void sd_tensor_release(sd_tensor *t)
{
	if (t->storage) sd_storage_release(t->storage);
	t->storage = NULL;
}

void sd_tensor_share(sd_tensor *dst, const sd_tensor *src)
{
	if (src->storage) sd_storage_retain(src->storage);
	*dst = *src;
}

int64_t sd_tensor_numel(const sd_tensor *t)
{
	int64_t n = 1;
	for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
	return n;
}

int sd_tensor_is_contiguous(const sd_tensor *t)
{
	int64_t s = 1;
	for (int i = t->ndim - 1; i >= 0; i--) {
		if (t->shape[i] != 1 && t->stride[i] != s) return 0;
		s *= t->shape[i];
	}
	return 1;
}

void *sd_tensor_data(const sd_tensor *t)
{
	return (char *)t->storage->data + t->offset * (int64_t)sd_dtype_size(t->dtype);
}

int sd_tensor_same_shape(const sd_tensor *a, const sd_tensor *b)
{
	if (a->ndim != b->ndim) return 0;
	for (int i = 0; i < a->ndim; i++)
		if (a->shape[i] != b->shape[i]) return 0;
	return 1;
}

/* ---- views ----------------------------------------------------------------------------- */

static int norm_dim(int dim, int ndim, const char *op)
{
	int d = dim < 0 ? dim + ndim : dim;
	if (d < 0 || d >= ndim) return sd_seterr("%s: dimension %d out of range for %d dimensions", op, dim + (dim >= 0), ndim), -1;
	return d;
}

int sd_tensor_view(const sd_tensor *src, sd_tensor *dst, int ndim, const int64_t *shape_in)
{
	int64_t shape[SD_MAX_DIMS], n = sd_tensor_numel(src), known = 1;
	int infer = -1;
	if (ndim < 0 || ndim > SD_MAX_DIMS) return sd_seterr("view: %d dimensions (at most %d)", ndim, SD_MAX_DIMS);
	for (int i = 0; i < ndim; i++) {
		shape[i] = shape_in[i];
		if (shape[i] == -1) {
			if (infer >= 0) return sd_seterr("view: only one dimension can be -1");
			infer = i;
		} else if (shape[i] < 0) {
			return sd_seterr("view: invalid size %lld", (long long)shape[i]);
		} else if (__builtin_mul_overflow(known, shape[i], &known)) {
			return sd_seterr("view: shape too large");
		}
	}
	if (infer >= 0) {
		if (known == 0 || n % known != 0)
			return sd_seterr("view: cannot view %s (%lld elements) as %s", SD_SHAPE_STR(src), (long long)n,
			                 sd_shape_str(ndim, shape_in, (char[160]){0}, 160));
		shape[infer] = n / known;
		known = n;
	}
	if (known != n)
		return sd_seterr("view: cannot view %s (%lld elements) as %s (%lld elements)", SD_SHAPE_STR(src),
		                 (long long)n, sd_shape_str(ndim, shape, (char[160]){0}, 160), (long long)known);
	/* Walk both shapes grouping dims that are contiguous in memory (as torch's computeStride). */
	int64_t stride[SD_MAX_DIMS];
	if (n == 0) {
		int64_t s = 1;
		for (int i = ndim - 1; i >= 0; i--) { stride[i] = s; s *= shape[i] ? shape[i] : 1; }
	} else {
		/* size-1 dims of src carry no stride information: drop them first */
		int64_t sz[SD_MAX_DIMS], sd[SD_MAX_DIMS];
		int m = 0, vi = ndim - 1;
		for (int i = 0; i < src->ndim; i++)
			if (src->shape[i] != 1) { sz[m] = src->shape[i]; sd[m++] = src->stride[i]; }
		for (int si = m - 1; si >= 0; si--) {
			int64_t base = sd[si], chunk = sz[si], acc = 1;
			while (si > 0 && sd[si - 1] == sd[si] * sz[si]) chunk *= sz[--si];
			while (vi >= 0 && acc < chunk) {
				stride[vi] = base * acc;
				acc *= shape[vi--];
			}
			if (acc != chunk)
				return sd_seterr("view: shape %s is not compatible with the strides of %s; use reshape (which copies)",
				                 sd_shape_str(ndim, shape, (char[160]){0}, 160), SD_SHAPE_STR(src));
		}
		for (; vi >= 0; vi--) stride[vi] = 1; /* leading size-1 dims */
	}
	sd_tensor_share(dst, src);
	dst->ndim = ndim;
	memcpy(dst->shape, shape, sizeof(int64_t) * (size_t)ndim);
	memcpy(dst->stride, stride, sizeof(int64_t) * (size_t)ndim);
	return 0;
}

int sd_tensor_reshape(const sd_tensor *src, sd_tensor *dst, int ndim, const int64_t *shape)
{
	if (sd_tensor_is_contiguous(src)) return sd_tensor_view(src, dst, ndim, shape);
	sd_tensor c;
	if (sd_tensor_contiguous(src, &c) != 0) return -1;
	int r = sd_tensor_view(&c, dst, ndim, shape);
	sd_tensor_release(&c);
	if (r) sd_seterr("reshape: %s", sd_geterr() + (strncmp(sd_geterr(), "view: ", 6) ? 0 : 6));
	return r;
}

int sd_tensor_permute(const sd_tensor *src, sd_tensor *dst, int ndim, const int *perm)
{
	if (ndim != src->ndim) return sd_seterr("permute: %d dimensions given for a tensor of %d", ndim, src->ndim);
	int seen[SD_MAX_DIMS] = {0}, p[SD_MAX_DIMS];
	for (int i = 0; i < ndim; i++) {
		p[i] = norm_dim(perm[i], ndim, "permute");
		if (p[i] < 0) return -1;
		if (seen[p[i]]++) return sd_seterr("permute: dimension %d repeated", p[i] + 1);
	}
	sd_tensor t = *src;
	for (int i = 0; i < ndim; i++) {
		t.shape[i] = src->shape[p[i]];
		t.stride[i] = src->stride[p[i]];
	}
	sd_tensor_share(dst, &t);
	return 0;
}

int sd_tensor_transpose(const sd_tensor *src, sd_tensor *dst, int d0, int d1)
{
	int a = norm_dim(d0, src->ndim, "transpose"), b = a < 0 ? -1 : norm_dim(d1, src->ndim, "transpose");
	if (a < 0 || b < 0) return -1;
	sd_tensor t = *src;
	t.shape[a] = src->shape[b]; t.stride[a] = src->stride[b];
	t.shape[b] = src->shape[a]; t.stride[b] = src->stride[a];
	sd_tensor_share(dst, &t);
	return 0;
}

int sd_tensor_narrow(const sd_tensor *src, sd_tensor *dst, int dim, int64_t start, int64_t length)
{
	int d = norm_dim(dim, src->ndim, "narrow");
	if (d < 0) return -1;
	if (start < 0 || length < 0 || start > src->shape[d] || length > src->shape[d] - start)
		return sd_seterr("narrow: elements %lld..%lld outside dimension %d of size %lld in %s", (long long)start + 1,
		                 (long long)(start + length), d + 1, (long long)src->shape[d], SD_SHAPE_STR(src));
	sd_tensor t = *src;
	t.offset += start * src->stride[d];
	t.shape[d] = length;
	sd_tensor_share(dst, &t);
	return 0;
}

int sd_tensor_select(const sd_tensor *src, sd_tensor *dst, int dim, int64_t index)
{
	int d = norm_dim(dim, src->ndim, "select");
	if (d < 0) return -1;
	if (index < 0 || index >= src->shape[d])
		return sd_seterr("select: index %lld out of range for dimension %d of size %lld", (long long)index + 1, d + 1,
		                 (long long)src->shape[d]);
	sd_tensor t = *src;
	t.offset += index * src->stride[d];
	for (int i = d; i < src->ndim - 1; i++) {
		t.shape[i] = src->shape[i + 1];
		t.stride[i] = src->stride[i + 1];
	}
	t.ndim--;
	sd_tensor_share(dst, &t);
	return 0;
}

int sd_tensor_squeeze(const sd_tensor *src, sd_tensor *dst, int dim)
{
	sd_tensor t = *src;
	if (dim < -src->ndim) {
		t.ndim = 0;
		for (int i = 0; i < src->ndim; i++)
			if (src->shape[i] != 1) {
				t.shape[t.ndim] = src->shape[i];
				t.stride[t.ndim++] = src->stride[i];
			}
	} else {
		int d = norm_dim(dim, src->ndim, "squeeze");
		if (d < 0) return -1;
		if (src->shape[d] != 1) { sd_tensor_share(dst, src); return 0; }
		for (int i = d; i < src->ndim - 1; i++) {
			t.shape[i] = src->shape[i + 1];
			t.stride[i] = src->stride[i + 1];
		}
		t.ndim--;
	}
	sd_tensor_share(dst, &t);
	return 0;
}

int sd_tensor_unsqueeze(const sd_tensor *src, sd_tensor *dst, int dim)
{
	if (src->ndim >= SD_MAX_DIMS) return sd_seterr("unsqueeze: already %d dimensions", SD_MAX_DIMS);
	int d = norm_dim(dim, src->ndim + 1, "unsqueeze");
	if (d < 0) return -1;
	sd_tensor t = *src;
	for (int i = src->ndim; i > d; i--) {
		t.shape[i] = src->shape[i - 1];
		t.stride[i] = src->stride[i - 1];
	}
	t.shape[d] = 1;
	t.stride[d] = d < src->ndim ? src->shape[d] * src->stride[d] : 1;
	t.ndim++;
	sd_tensor_share(dst, &t);
	return 0;
}

int sd_tensor_expand(const sd_tensor *src, sd_tensor *dst, int ndim, const int64_t *shape)
{
	if (ndim < src->ndim || ndim > SD_MAX_DIMS)
		return sd_seterr("expand: cannot expand %s to %d dimensions", SD_SHAPE_STR(src), ndim);
	sd_tensor t = *src;
	int lead = ndim - src->ndim;
	for (int i = ndim - 1; i >= 0; i--) {
		int si = i - lead;
		int64_t have = si >= 0 ? src->shape[si] : 1, want = shape[i] == -1 && si >= 0 ? have : shape[i];
		if (want < 0) return sd_seterr("expand: invalid size %lld", (long long)shape[i]);
		if (have == want) {
			t.shape[i] = have;
			t.stride[i] = si >= 0 ? src->stride[si] : 0;
		} else if (have == 1) {
			t.shape[i] = want;
			t.stride[i] = 0;
		} else {
			return sd_seterr("expand: cannot expand %s to %s (dimension %d: %lld vs %lld)", SD_SHAPE_STR(src),
			                 sd_shape_str(ndim, shape, (char[160]){0}, 160), i + 1, (long long)have, (long long)want);
		}
	}
	t.ndim = ndim;
	sd_tensor_share(dst, &t);
	return 0;
}

/* ---- copies ---------------------------------------------------------------------------- */

int sd_broadcast_shape(int na, const int64_t *a, int nb, const int64_t *b, int *nout, int64_t *out)
{
	int n = na > nb ? na : nb;
	for (int i = 0; i < n; i++) {
		int ia = i - (n - na), ib = i - (n - nb);
		int64_t x = ia >= 0 ? a[ia] : 1, y = ib >= 0 ? b[ib] : 1;
		if (x != y && x != 1 && y != 1)
			return sd_seterr("shapes %s and %s do not broadcast", sd_shape_str(na, a, (char[160]){0}, 160),
			                 sd_shape_str(nb, b, (char[160]){0}, 160));
		out[i] = x == 1 ? y : x;
	}
	*nout = n;
	return 0;
}

int sd_iter_init(sd_iter *it, int nops, const sd_tensor *const *ops, int ndim, const int64_t *shape)
{
	int64_t st[SD_ITER_MAXOPS][SD_MAX_DIMS];
	memset(it, 0, sizeof *it);
	it->nops = nops;
	for (int k = 0; k < nops; k++) {
		const sd_tensor *t = ops[k];
		int lead = ndim - t->ndim;
		if (lead < 0) return sd_seterr("%s does not broadcast to %s", SD_SHAPE_STR(t), sd_shape_str(ndim, shape, (char[160]){0}, 160));
		for (int i = 0; i < ndim; i++) {
			int si = i - lead;
			int64_t have = si >= 0 ? t->shape[si] : 1;
			if (have != shape[i] && have != 1)
				return sd_seterr("%s does not broadcast to %s", SD_SHAPE_STR(t), sd_shape_str(ndim, shape, (char[160]){0}, 160));
			st[k][i] = (si >= 0 && have == shape[i]) ? t->stride[si] : 0;
		}
		it->data[k] = sd_tensor_data(t);
		it->elsize[k] = sd_dtype_size(t->dtype);
	}
	/* Drop size-1 dims, then merge dim i into i+1 when every operand steps through both as one. */
	int64_t sh[SD_MAX_DIMS];
	int n = 0;
	for (int i = 0; i < ndim; i++) {
		if (shape[i] == 1) continue;
		if (n > 0) {
			int merge = 1;
			for (int k = 0; k < nops; k++)
				if (st[k][n - 1] != st[k][i] * shape[i]) merge = 0;
			if (merge) {
				sh[n - 1] *= shape[i];
				for (int k = 0; k < nops; k++) st[k][n - 1] = st[k][i];
				continue;
			}
		}
		sh[n] = shape[i];
		for (int k = 0; k < nops; k++) st[k][n] = st[k][i];
		n++;
	}
	int64_t total = 1;
	for (int i = 0; i < ndim; i++) total *= shape[i];
	if (n == 0) { /* a single element, or an empty tensor */
		it->inner = total;
		it->rows = total ? 1 : 0;
		return 0;
	}
	it->inner = sh[n - 1];
	for (int k = 0; k < nops; k++) it->inner_stride[k] = st[k][n - 1];
	it->ndim = n - 1;
	it->rows = 1;
	for (int i = 0; i < n - 1; i++) {
		it->shape[i] = sh[i];
		it->rows *= sh[i];
		for (int k = 0; k < nops; k++) it->stride[k][i] = st[k][i];
	}
	if (total == 0) it->rows = 0;
	return 0;
}

void sd_iter_row(const sd_iter *it, int64_t row, char **ptrs)
{
	for (int k = 0; k < it->nops; k++) ptrs[k] = it->data[k];
	for (int i = it->ndim - 1; i >= 0; i--) {
		int64_t idx = row % it->shape[i];
		row /= it->shape[i];
		for (int k = 0; k < it->nops; k++) ptrs[k] += idx * it->stride[k][i] * (int64_t)it->elsize[k];
	}
}

int sd_tensor_copy(sd_tensor *dst, const sd_tensor *src)
{
	const sd_tensor *ops[2] = {dst, src};
	sd_iter it;
	if (sd_iter_init(&it, 2, ops, dst->ndim, dst->shape) != 0) return sd_seterr("copy: %s", sd_geterr());
	size_t ds = it.elsize[0], ss = it.elsize[1];
	int contiguous_rows = it.inner_stride[0] == 1 && it.inner_stride[1] == 1;
	#pragma omp parallel for if (it.rows * it.inner > (1 << 16))
	for (int64_t r = 0; r < it.rows; r++) {
		char *p[2];
		sd_iter_row(&it, r, p);
		if (contiguous_rows) {
			sd_convert(p[1], src->dtype, p[0], dst->dtype, (size_t)it.inner);
		} else {
			for (int64_t i = 0; i < it.inner; i++)
				sd_convert(p[1] + i * it.inner_stride[1] * (int64_t)ss, src->dtype,
				           p[0] + i * it.inner_stride[0] * (int64_t)ds, dst->dtype, 1);
		}
	}
	return 0;
}

int sd_tensor_to(const sd_tensor *src, sd_tensor *dst, sd_dtype dt)
{
	sd_tensor t;
	if (sd_tensor_new(&t, dt, src->ndim, src->shape) != 0) return -1;
	if (sd_tensor_copy(&t, src) != 0) { sd_tensor_release(&t); return -1; }
	*dst = t;
	return 0;
}

int sd_tensor_clone(const sd_tensor *src, sd_tensor *dst) { return sd_tensor_to(src, dst, src->dtype); }

int sd_tensor_contiguous(const sd_tensor *src, sd_tensor *dst)
{
	if (sd_tensor_is_contiguous(src)) { sd_tensor_share(dst, src); return 0; }
	return sd_tensor_to(src, dst, src->dtype);
}
