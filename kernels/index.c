/* cat, stack, embedding, linspace, arange. */
#include <math.h>
#include <string.h>
#include "index.h"
#include "sd_error.h"

int sd_cat(const sd_tensor *const *ts, int n, int dim, sd_tensor *out)
{
	if (n <= 0) return sd_seterr("no tensors to join");
	const sd_tensor *f = ts[0];
	int nd = f->ndim;
	if (nd == 0) return sd_seterr("cannot join 0-dimensional tensors");
	int d = dim < 0 ? dim + nd : dim;
	if (d < 0 || d >= nd) return sd_seterr("dimension %d out of range for %s", dim, SD_SHAPE_STR(f));
	int64_t shape[SD_MAX_DIMS];
	memcpy(shape, f->shape, sizeof shape);
	shape[d] = 0;
	for (int k = 0; k < n; k++) {
		const sd_tensor *t = ts[k];
		if (t->dtype != f->dtype)
			return sd_seterr("tensor %d is %s but tensor 1 is %s", k + 1, sd_dtype_name(t->dtype), sd_dtype_name(f->dtype));
		int ok = t->ndim == nd;
		for (int i = 0; ok && i < nd; i++)
			if (i != d && t->shape[i] != f->shape[i]) ok = 0;
		if (!ok)
			return sd_seterr("tensor %d has shape %s, tensor 1 has %s: they differ outside dimension %d", k + 1,
			                 SD_SHAPE_STR(t), SD_SHAPE_STR(f), d + 1);
		shape[d] += t->shape[d];
	}
	sd_tensor r;
	if (sd_tensor_new(&r, f->dtype, nd, shape) != 0) return -1;
	int64_t at = 0;
	for (int k = 0; k < n; k++) {
		int64_t len = ts[k]->shape[d];
		if (len == 0) continue;
		sd_tensor part;
		if (sd_tensor_narrow(&r, &part, d, at, len) != 0) { sd_tensor_release(&r); return -1; }
		int rc = sd_tensor_copy(&part, ts[k]);
		sd_tensor_release(&part);
		if (rc != 0) { sd_tensor_release(&r); return -1; }
		at += len;
	}
	*out = r;
	return 0;
}

int sd_stack(const sd_tensor *const *ts, int n, int dim, sd_tensor *out)
{
	if (n <= 0) return sd_seterr("no tensors to stack");
	const sd_tensor *f = ts[0];
	int nd = f->ndim + 1;
	if (nd > SD_MAX_DIMS) return sd_seterr("stacking %s would exceed %d dimensions", SD_SHAPE_STR(f), SD_MAX_DIMS);
	int d = dim < 0 ? dim + nd : dim;
	if (d < 0 || d >= nd) return sd_seterr("dimension %d out of range for stacking %s", dim, SD_SHAPE_STR(f));
	for (int k = 1; k < n; k++)
		if (!sd_tensor_same_shape(ts[k], f))
			return sd_seterr("tensor %d has shape %s, tensor 1 has %s", k + 1, SD_SHAPE_STR(ts[k]), SD_SHAPE_STR(f));
	sd_storage *mem = sd_storage_new((sizeof(sd_tensor) + sizeof(sd_tensor *)) * (size_t)n);
	if (!mem) return -1;
	sd_tensor *vs = mem->data;
	const sd_tensor **vpp = (const sd_tensor **)(vs + n);
	int made = 0, rc = 0;
	for (int k = 0; k < n && rc == 0; k++) {
		rc = sd_tensor_unsqueeze(ts[k], &vs[k], d);
		if (rc == 0) { vpp[k] = &vs[k]; made++; }
	}
	if (rc == 0) rc = sd_cat(vpp, n, d, out);
	for (int k = 0; k < made; k++) sd_tensor_release(&vs[k]);
	sd_storage_release(mem);
	return rc;
}

int sd_embedding_f32(const void *weight, sd_dtype wdt, int64_t rows, int64_t dim, const double *ids, int64_t n, float *out)
{
	size_t es = sd_dtype_size(wdt);
	for (int64_t i = 0; i < n; i++) {
		double v = ids[i];
		if (!(v >= 0 && v < (double)rows && v == floor(v))) {
			return sd_seterr("id %.17g at position %lld is not a row of the (%lld, %lld) weight", v, (long long)i + 1,
			                 (long long)rows, (long long)dim);
		}
	}
	#pragma omp parallel for schedule(static) if (n * dim >= (1 << 16))
	for (int64_t i = 0; i < n; i++) {
		int64_t id = (int64_t)ids[i];
		sd_convert((const char *)weight + (size_t)(id * dim) * es, wdt, out + i * dim, SD_F32, (size_t)dim);
	}
	return 0;
}

int sd_embedding(const sd_tensor *weight, const sd_tensor *ids, sd_tensor *out)
{
	if (!sd_dtype_is_float(weight->dtype)) return sd_seterr("weight must be a float tensor, got %s", sd_dtype_name(weight->dtype));
	if (weight->ndim != 2) return sd_seterr("weight %s is not (rows, dim)", SD_SHAPE_STR(weight));
	if (ids->ndim + 1 > SD_MAX_DIMS) return sd_seterr("ids %s have too many dimensions", SD_SHAPE_STR(ids));
	int64_t n = sd_tensor_numel(ids), V = weight->shape[0], D = weight->shape[1];
	sd_tensor wc, idd, r;
	/* the ids as doubles: exact for every i32 and for i64 up to 2^53 */
	if (sd_tensor_contiguous(ids, &idd) != 0) return -1;
	double *dv = NULL;
	sd_storage *ds = sd_storage_new(sizeof(double) * (size_t)(n ? n : 1));
	if (!ds) { sd_tensor_release(&idd); return -1; }
	dv = ds->data;
	const char *p = sd_tensor_data(&idd);
	switch (idd.dtype) {
	case SD_I64: for (int64_t i = 0; i < n; i++) dv[i] = (double)((const int64_t *)p)[i]; break;
	case SD_I32: for (int64_t i = 0; i < n; i++) dv[i] = ((const int32_t *)p)[i]; break;
	case SD_U8: for (int64_t i = 0; i < n; i++) dv[i] = ((const uint8_t *)p)[i]; break;
	case SD_F32: for (int64_t i = 0; i < n; i++) dv[i] = ((const float *)p)[i]; break;
	default: { /* f16 / bf16 */
		float tmp;
		for (int64_t i = 0; i < n; i++) {
			sd_convert(p + (size_t)i * 2, idd.dtype, &tmp, SD_F32, 1);
			dv[i] = tmp;
		}
	}
	}
	sd_tensor_release(&idd);
	int64_t shape[SD_MAX_DIMS];
	memcpy(shape, ids->shape, sizeof(int64_t) * (size_t)ids->ndim);
	shape[ids->ndim] = D;
	if (sd_tensor_contiguous(weight, &wc) != 0) { sd_storage_release(ds); return -1; }
	if (sd_tensor_new(&r, SD_F32, ids->ndim + 1, shape) != 0) { sd_tensor_release(&wc); sd_storage_release(ds); return -1; }
	int rc = sd_embedding_f32(sd_tensor_data(&wc), wc.dtype, V, D, dv, n, sd_tensor_data(&r));
	sd_tensor_release(&wc);
	sd_storage_release(ds);
	if (rc != 0) { sd_tensor_release(&r); return -1; }
	*out = r;
	return 0;
}

void sd_linspace_f32(float a, float b, int64_t n, float *y)
{
	if (n <= 0) return;
	if (n == 1) { y[0] = a; return; }
	float step = (b - a) / (float)(n - 1);
	int64_t half = n / 2;
	for (int64_t i = 0; i < n; i++) {
		if (i < half) {
			float t = step * (float)i;
			y[i] = a + t;
		} else {
			float t = step * (float)(n - 1 - i);
			y[i] = b - t;
		}
	}
}

int sd_linspace(double a, double b, int64_t n, sd_tensor *out)
{
	if (n < 0) return sd_seterr("number of steps %lld must be >= 0", (long long)n);
	if (!isfinite(a) || !isfinite(b)) return sd_seterr("ends %g and %g must be finite", a, b);
	int64_t shape[1] = {n};
	sd_tensor r;
	if (sd_tensor_new(&r, SD_F32, 1, shape) != 0) return -1;
	sd_linspace_f32((float)a, (float)b, n, sd_tensor_data(&r));
	*out = r;
	return 0;
}

int sd_arange(double start, double stop, double step, sd_dtype dt, sd_tensor *out)
{
	if (!isfinite(start) || !isfinite(stop) || !isfinite(step))
		return sd_seterr("start %g, stop %g and step %g must be finite", start, stop, step);
	if (step == 0) return sd_seterr("step must not be 0");
	if ((stop - start) / step < 0)
		return sd_seterr("step %g goes away from stop %g (start %g)", step, stop, start);
	double len = ceil((stop - start) / step);
	if (len > 1e12) return sd_seterr("%g elements are too many", len);
	if ((dt == SD_I32 || dt == SD_U8) &&
	    (fmin(start, start + step * (len - 1)) < (dt == SD_U8 ? 0 : -2147483648.0) ||
	     fmax(start, start + step * (len - 1)) > (dt == SD_U8 ? 255 : 2147483647.0)) && len > 0)
		return sd_seterr("values from %g to %g do not fit %s", start, start + step * (len - 1), sd_dtype_name(dt));
	if (dt == SD_I64 && fmax(fabs(start), fabs(start + step * (len - 1))) > 9.2e18)
		return sd_seterr("values from %g to %g do not fit i64", start, start + step * (len - 1));
	int64_t n = (int64_t)len, shape[1] = {n};
	sd_tensor r;
	if (sd_tensor_new(&r, dt, 1, shape) != 0) return -1;
	void *p = sd_tensor_data(&r);
	switch (dt) {
	case SD_I64: for (int64_t i = 0; i < n; i++) ((int64_t *)p)[i] = (int64_t)(start + step * (double)i); break;
	case SD_I32: for (int64_t i = 0; i < n; i++) ((int32_t *)p)[i] = (int32_t)(start + step * (double)i); break;
	case SD_F32: for (int64_t i = 0; i < n; i++) ((float *)p)[i] = (float)(start + step * (double)i); break;
	default: {
		sd_storage *tmp = sd_storage_new(sizeof(float) * (size_t)(n ? n : 1));
		if (!tmp) { sd_tensor_release(&r); return -1; }
		float *f = tmp->data;
		for (int64_t i = 0; i < n; i++) f[i] = (float)(start + step * (double)i);
		sd_convert(f, SD_F32, p, dt, (size_t)n);
		sd_storage_release(tmp);
	}
	}
	*out = r;
	return 0;
}
