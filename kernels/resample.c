/* Nearest and bilinear resampling (torch's index and weight arithmetic, in float). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "resample.h"
#include "sd_error.h"

#define RS_PAR_MIN (1 << 15)

/* torch's area_pixel_compute_scale for align_corners=False: 1/scale_factor if given, else in/out */
static float src_scale(int64_t in, int64_t out, double given)
{
	return given > 0 ? (float)(1.0 / given) : (float)in / (float)out;
}

static int64_t nearest_index(int64_t dst, int64_t in, int64_t out, float scale)
{
	if (in == out) return dst;
	if (out == 2 * in) return dst >> 1;
	int64_t i = (int64_t)floorf((float)dst * scale);
	return i < in - 1 ? i : in - 1;
}

int sd_upsample_nearest_f32(const float *x, float *y, int64_t planes, int64_t ih, int64_t iw,
                             int64_t oh, int64_t ow, double sh, double sw)
{
	if (planes <= 0 || oh <= 0 || ow <= 0 || ih <= 0 || iw <= 0) return 0;
	int64_t *ix = malloc(sizeof(int64_t) * (size_t)(ow + oh));
	if (!ix) return sd_seterr("out of memory");
	int64_t *iy = ix + ow;
	float fh = src_scale(ih, oh, sh), fw = src_scale(iw, ow, sw);
	for (int64_t c = 0; c < ow; c++) ix[c] = nearest_index(c, iw, ow, fw);
	for (int64_t r = 0; r < oh; r++) iy[r] = nearest_index(r, ih, oh, fh);
	int twice = ow == 2 * iw;
	#pragma omp parallel for schedule(static) if (planes * oh * ow >= RS_PAR_MIN)
	for (int64_t t = 0; t < planes * oh; t++) {
		int64_t p = t / oh, r = t % oh;
		float *yr = y + t * ow; /* each row from its source row: rows are shared out among threads */
		const float *xr = x + (p * ih + iy[r]) * iw;
		if (twice) {
			for (int64_t c = 0; c < iw; c++) yr[2 * c] = yr[2 * c + 1] = xr[c];
		} else {
			for (int64_t c = 0; c < ow; c++) yr[c] = xr[ix[c]];
		}
	}
	free(ix);
	return 0;
}

/* torch's compute_indices_weights_linear with align_corners=False */
static void linear_weights(int64_t in, int64_t out, float scale, int64_t *i0, int64_t *i1, float *l0, float *l1)
{
	for (int64_t d = 0; d < out; d++) {
		float src = scale * ((float)d + 0.5f) - 0.5f;
		if (src < 0) src = 0;
		int64_t a = (int64_t)src;
		if (a > in - 1) a = in - 1;
		float lam = src - (float)a;
		if (lam > 1) lam = 1;
		i0[d] = a;
		i1[d] = a + (a < in - 1 ? 1 : 0);
		l1[d] = lam;
		l0[d] = 1.0f - lam;
	}
}

int sd_upsample_bilinear_f32(const float *x, float *y, int64_t planes, int64_t ih, int64_t iw,
                              int64_t oh, int64_t ow, double sh, double sw)
{
	if (planes <= 0 || oh <= 0 || ow <= 0 || ih <= 0 || iw <= 0) return 0;
	size_t n = (size_t)(oh + ow);
	int64_t *idx = malloc(sizeof(int64_t) * 2 * n);
	float *lam = malloc(sizeof(float) * 2 * n);
	if (!idx || !lam) {
		free(idx);
		free(lam);
		return sd_seterr("out of memory");
	}
	int64_t *h0 = idx, *h1 = idx + oh, *w0 = idx + 2 * oh, *w1 = idx + 2 * oh + ow;
	float *hl0 = lam, *hl1 = lam + oh, *wl0 = lam + 2 * oh, *wl1 = lam + 2 * oh + ow;
	linear_weights(ih, oh, src_scale(ih, oh, sh), h0, h1, hl0, hl1);
	linear_weights(iw, ow, src_scale(iw, ow, sw), w0, w1, wl0, wl1);
	#pragma omp parallel for schedule(static) if (planes * oh * ow >= RS_PAR_MIN)
	for (int64_t t = 0; t < planes * oh; t++) {
		int64_t p = t / oh, r = t % oh;
		const float *xa = x + (p * ih + h0[r]) * iw, *xb = x + (p * ih + h1[r]) * iw;
		float a = hl0[r], b = hl1[r];
		float *yr = y + t * ow;
		for (int64_t c = 0; c < ow; c++) {
			float top = xa[w0[c]] * wl0[c] + xa[w1[c]] * wl1[c];
			float bot = xb[w0[c]] * wl0[c] + xb[w1[c]] * wl1[c];
			yr[c] = top * a + bot * b;
		}
	}
	free(idx);
	free(lam);
	return 0;
}

int sd_interpolate(const sd_tensor *x, sd_resample_mode mode, int64_t oh, int64_t ow, double sh, double sw, sd_tensor *out)
{
	if (x->dtype != SD_F32) return sd_seterr("expected an f32 tensor, got %s", sd_dtype_name(x->dtype));
	if (x->ndim != 4 && x->ndim != 3) return sd_seterr("input %s is not (N, C, H, W)", SD_SHAPE_STR(x));
	int64_t ih = x->shape[x->ndim - 2], iw = x->shape[x->ndim - 1];
	if (oh <= 0 || ow <= 0) {
		if (!(sh > 0 && sw > 0 && isfinite(sh) && isfinite(sw)))
			return sd_seterr("give an output size or positive scale factors");
		double fh = floor((double)ih * sh), fw = floor((double)iw * sw);
		if (fh > 1e9 || fw > 1e9) return sd_seterr("scale factors %g, %g are too large for %s", sh, sw, SD_SHAPE_STR(x));
		oh = (int64_t)fh;
		ow = (int64_t)fw;
	} else {
		sh = sw = 0;
	}
	if (oh <= 0 || ow <= 0)
		return sd_seterr("output size (%lld, %lld) from %s is empty", (long long)oh, (long long)ow, SD_SHAPE_STR(x));
	if (ih <= 0 || iw <= 0) return sd_seterr("input %s is empty", SD_SHAPE_STR(x));
	int64_t shape[SD_MAX_DIMS];
	memcpy(shape, x->shape, sizeof shape);
	shape[x->ndim - 2] = oh;
	shape[x->ndim - 1] = ow;
	sd_tensor xc, r;
	if (sd_tensor_contiguous(x, &xc) != 0) return -1;
	if (sd_tensor_new(&r, SD_F32, x->ndim, shape) != 0) { sd_tensor_release(&xc); return -1; }
	int64_t planes = sd_tensor_numel(x) / (ih * iw);
	int rc = mode == SD_RESAMPLE_BILINEAR
	         ? sd_upsample_bilinear_f32(sd_tensor_data(&xc), sd_tensor_data(&r), planes, ih, iw, oh, ow, sh, sw)
	         : sd_upsample_nearest_f32(sd_tensor_data(&xc), sd_tensor_data(&r), planes, ih, iw, oh, ow, sh, sw);
	sd_tensor_release(&xc);
	if (rc != 0) { sd_tensor_release(&r); return -1; }
	*out = r;
	return 0;
}
