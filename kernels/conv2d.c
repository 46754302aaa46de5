/* 2-D convolution on sgemm: direct products for 1x1 convolutions, a batch-wide im2col for small
 * images, banded im2col per image otherwise. */
#include "conv2d.h"

#include <omp.h>
#include <string.h>

#include "dtype.h"
#include "gemm.h"
#include "gemm_bf16.h"
#include "gemm_tiles.h"
#include "sd_error.h"

/* im2col workspace budget in floats: 4 MB for the shared band of small images, 8 MB per thread
 * for the per-thread bands of large ones; a band has at least MIN_COLS output pixels. */
#define IM2COL_FLOATS (1 << 20)
#define MIN_COLS 128
/* output pixels per thread from which each thread runs its own bands */
#ifndef SD_CONV_PERTHREAD_MIN
#define SD_CONV_PERTHREAD_MIN 128
#endif
/* images of at most this many output pixels (16x16, 8x8) are done batch-wide: one product for
 * all the images of the batch */
#ifndef SD_CONV_BATCH_MAXPIX
#define SD_CONV_BATCH_MAXPIX 256
#endif
/* budget of a batch-wide im2col band in floats (48 MB): every SD 1.5 512^2 conv at batch 2 (CFG)
 * fits in one band (the largest, 2560->1280 3x3 at 16x16, needs 11.8 Mi floats) */
#define BATCH_COL_FLOATS (12 << 20)
/* f16/bf16 weights, batch-wide products of at least SD_CONV_WIDEN_MINCOLS columns: weight row
 * tiles of up to WIDEN_TILE_FLOATS (64 MB; a whole 1280-row 3x3 weight) widened by all threads,
 * each then multiplied with BLAS threading. Thinner products (8x8 at batch 2: 128 columns) do
 * better in sd_gemm_ex, whose threads each widen and multiply their own rows. */
#define WIDEN_TILE_FLOATS (16 << 20)
#ifndef SD_CONV_WIDEN_MINCOLS
#define SD_CONV_WIDEN_MINCOLS 256
#endif
/* deep convolutions over larger images go by slices of kdim (conv_kslices): from this kdim on,
 * slices of up to KSLICE_COL_FLOATS (16 MB) of the im2col matrix, at least KSLICE_MIN_ROWS rows,
 * when the og x n*ohw result fits KSLICE_OUT_FLOATS */
#ifndef SD_CONV_KSLICE_MIN
#define SD_CONV_KSLICE_MIN 4608
#endif
#define KSLICE_COL_FLOATS (4 << 20)
#define KSLICE_MIN_ROWS 64
#define KSLICE_OUT_FLOATS (8 << 20) /* the og x n*ohw result: at most 32 MB */
/* im2col slice of the bf16 per-thread bands: 256 KB, so that it is packed from L2 */
#define BF16_SLICE_FLOATS (64 << 10)
#ifndef SD_CONV_GATHER_PAR
#define SD_CONV_GATHER_PAR (1 << 14)
#endif

int64_t sd_conv2d_outsize(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil)
{
	if (stride <= 0 || dil <= 0 || k <= 0 || pad < 0) return 0;
	int64_t span = in + 2 * pad - dil * (k - 1) - 1;
	if (span < 0) return 0;
	return span / stride + 1;
}

/* The size of equal chunks of `total`, each at most `most` (raised to `least`, cut to total). */
static int64_t even_chunks(int64_t total, int64_t most, int64_t least)
{
	if (most < least) most = least;
	if (most > total) most = total;
	int64_t count = (total + most - 1) / most;
	return (total + count - 1) / count;
}

/* Short runs are copied inline: a call to memcpy/memset costs more than 8 or 16 floats. */
static inline void copy_run(float *dst, const float *src, int64_t n)
{
	if (n >= 32) { memcpy(dst, src, (size_t)n * sizeof(float)); return; }
	for (int64_t i = 0; i < n; i++) dst[i] = src[i];
}

static inline void zero_run(float *dst, int64_t n)
{
	if (n >= 32) { memset(dst, 0, (size_t)n * sizeof(float)); return; }
	for (int64_t i = 0; i < n; i++) dst[i] = 0.0f;
}

/* One row of the im2col matrix: input channel plane `xc` (h x w), kernel tap (ki, kj), output
 * pixels [p0, p0 + np) of an oh x ow output, into dst[0 .. np). */
static void im2col_row(const float *xc, int64_t h, int64_t w, int64_t ki, int64_t kj,
                       const sd_conv2d_params *p, int64_t ow, int64_t p0, int64_t np, float *dst)
{
	int64_t pend = p0 + np;
	int64_t pos = p0;
	int64_t oy = pos / ow, ox0 = pos % ow;
	int64_t off = kj * p->dil_w - p->pad_w; /* ix = ox * sw + off */
	while (pos < pend) {
		int64_t ox1 = ow < ox0 + (pend - pos) ? ow : ox0 + (pend - pos); /* exclusive */
		int64_t cnt = ox1 - ox0;
		int64_t iy = oy * p->stride_h - p->pad_h + ki * p->dil_h;
		if (iy < 0 || iy >= h) {
			zero_run(dst, cnt);
		} else {
			const float *xr = xc + iy * w;
			if (p->stride_w == 1) {
				/* valid ox: 0 <= ox + off < w */
				int64_t lo = -off > ox0 ? -off : ox0;
				int64_t hi = w - off < ox1 ? w - off : ox1;
				if (hi <= lo) {
					zero_run(dst, cnt);
				} else {
					zero_run(dst, lo - ox0);
					copy_run(dst + (lo - ox0), xr + lo + off, hi - lo);
					zero_run(dst + (hi - ox0), ox1 - hi);
				}
			} else {
				int64_t sw = p->stride_w;
				for (int64_t ox = ox0; ox < ox1; ox++) {
					int64_t ix = ox * sw + off;
					dst[ox - ox0] = (ix >= 0 && ix < w) ? xr[ix] : 0.0f;
				}
			}
		}
		dst += cnt;
		pos += cnt;
		oy++;
		ox0 = 0;
	}
}

/* Rows [r0, r0 + rn) and columns [j0, j0 + cnt) of the im2col matrix of the images at x (row
 * r = input channel r / (kh*kw) of group gi and kernel tap r % (kh*kw); column j = image j / ohw,
 * output pixel j % ohw), into col (rn x cnt). A band of one image is columns inside [0, ohw). */
static void im2col(const float *x, int64_t c, int64_t h, int64_t w, int64_t gi, int64_t cg,
                         int64_t kh, int64_t kw, const sd_conv2d_params *p, int64_t ow, int64_t ohw,
                         int64_t r0, int64_t rn, int64_t j0, int64_t cnt, float *col, int par)
{
	int64_t hw = h * w;
#pragma omp parallel for schedule(static) if (par)
	for (int64_t r = r0; r < r0 + rn; r++) {
		int64_t ci = r / (kh * kw), t = r % (kh * kw);
		float *dst = col + (r - r0) * cnt;
		for (int64_t j = j0; j < j0 + cnt;) {
			int64_t b = j / ohw, p0 = j % ohw;
			int64_t seg = ohw - p0 < j0 + cnt - j ? ohw - p0 : j0 + cnt - j;
			im2col_row(x + (b * c + gi * cg + ci) * hw, h, w, t / kw, t % kw, p, ow, p0, seg,
			           dst + (j - j0));
			j += seg;
		}
	}
}

/* The product t (og x cnt) of batch-wide columns [j0, j0 + cnt), group gi, into y (NCHW) plus
 * the bias. */
static void scatter_batch(const float *t, int64_t cnt, int64_t j0, int64_t o, int64_t og, int64_t gi,
                          int64_t ohw, const float *bias, float *y, int par)
{
#pragma omp parallel for schedule(static) if (par)
	for (int64_t oc = 0; oc < og; oc++) {
		const float *tr = t + oc * cnt;
		float bv = bias ? bias[gi * og + oc] : 0.0f;
		for (int64_t j = j0; j < j0 + cnt;) {
			int64_t b = j / ohw, p0 = j % ohw;
			int64_t seg = ohw - p0 < j0 + cnt - j ? ohw - p0 : j0 + cnt - j;
			float *yr = y + (b * o + gi * og + oc) * ohw + p0;
			const float *src = tr + (j - j0);
			if (bias)
				for (int64_t q = 0; q < seg; q++) yr[q] = src[q] + bv;
			else
				memcpy(yr, src, (size_t)seg * sizeof(float));
			j += seg;
		}
	}
}

/* Precision bf16: the weights of each group are packed to bf16 once per call, then multiplied
 * with each im2col band (or, for 1x1 convolutions, the input itself) by the bf16 kernel, which
 * adds the bias. Large images: each thread takes whole bands, one parallel region per call, and
 * packs a band's columns for the kernel a slice of BF16_SLICE_FLOATS rows at a time (gathered
 * into L2, then converted), multiplying the band once packed. Small images: one band at a time,
 * gathered by all threads, the product split over the threads. */
static int conv_bf16(const float *x, int64_t n, int64_t c, int64_t h, int64_t w,
                     const char *wbytes, sd_dtype wdt, int64_t o, int64_t kh, int64_t kw,
                     const float *bias, const sd_conv2d_params *p, float *y)
{
	int64_t g = p->groups, cg = c / g, og = o / g, hw = h * w;
	int64_t oh = sd_conv2d_outsize(h, kh, p->stride_h, p->pad_h, p->dil_h);
	int64_t ow = sd_conv2d_outsize(w, kw, p->stride_w, p->pad_w, p->dil_w), ohw = oh * ow;
	int64_t kdim = cg * kh * kw;
	size_t esz = sd_dtype_size(wdt);
	int direct = kh == 1 && kw == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_h == 0 &&
	             p->pad_w == 0;
	int nth = omp_in_parallel() ? 1 : omp_get_max_threads();
	int par = nth > 1;
	int perthread = !direct && nth > 1 && ohw >= SD_CONV_PERTHREAD_MIN * nth;
	int64_t np = 2 * IM2COL_FLOATS / kdim;
	if (np < MIN_COLS) np = MIN_COLS;
	if (np > ohw) np = ohw;
	int64_t nb = (ohw + np - 1) / np;
	if (perthread) {
		nb = (nb + nth - 1) / nth * nth; /* an even share per thread */
		np = (ohw + nb - 1) / nb;
		nb = (ohw + np - 1) / np;
	}
	float *col = direct || perthread ? NULL : sd_workspace(2, (size_t)(kdim * np));
	if (!direct && !perthread && !col) return -1;
	int64_t rows = sd_bf16_rows_per_chunk(kdim);
	for (int64_t gi = 0; gi < g; gi++)
		for (int64_t o0 = 0; o0 < og; o0 += rows) {
			int64_t oc = og - o0 < rows ? og - o0 : rows;
			sd_bf16_pack pk;
			if (sd_bf16_pack_a(&pk, oc, kdim, wbytes + (size_t)((gi * og + o0) * kdim) * esz, wdt, kdim))
				return -1;
			const float *brow = bias ? bias + gi * og + o0 : NULL;
			for (int64_t b = 0; b < n; b++) {
				const float *xg = x + (b * c + gi * cg) * hw;
				float *yg = y + (b * o + gi * og + o0) * ohw;
				if (direct) {
					if (sd_gemm_bf16_packed(&pk, 0, hw, 1.0f, xg, SD_F32, hw, 0.0f, yg, ohw, brow, NULL))
						return -1;
					continue;
				}
				if (perthread) {
					int failed = 0;
					int64_t bstride = (kdim + 1) / 2 * SD_TILE_NR;
					int64_t rc = BF16_SLICE_FLOATS / np / 2 * 2;
					if (rc < 2) rc = 2;
#pragma omp parallel reduction(| : failed)
					{
						float *colt = sd_workspace(2, (size_t)(rc * np));
						uint32_t *pb = (uint32_t *)sd_workspace(1, (size_t)((np + SD_TILE_NR - 1) / SD_TILE_NR * bstride));
						if (!colt || !pb) failed = 1;
#pragma omp for schedule(dynamic, 1)
						for (int64_t band = 0; band < nb; band++) {
							if (failed) continue;
							int64_t p0 = band * np, cnt = ohw - p0 < np ? ohw - p0 : np;
							for (int64_t r0 = 0; r0 < kdim; r0 += rc) {
								int64_t rn = kdim - r0 < rc ? kdim - r0 : rc;
								im2col(x + b * c * hw, c, h, w, gi, cg, kh, kw, p, ow, ohw, r0, rn, p0, cnt, colt, 0);
								sd_tile_pack_b_avx512(0, colt, SD_F32, 0, cnt, cnt, rn, pb + r0 / 2 * SD_TILE_NR, bstride);
							}
							sd_bf16_gemm_prepacked_avx512(&pk, pb, bstride, cnt, yg + p0, ohw, brow);
						}
					}
					if (failed) return sd_seterr("conv2d: out of memory for the bf16 band workspaces");
					continue;
				}
				for (int64_t p0 = 0; p0 < ohw; p0 += np) {
					int64_t cnt = ohw - p0 < np ? ohw - p0 : np;
					im2col(x + b * c * hw, c, h, w, gi, cg, kh, kw, p, ow, ohw, 0, kdim, p0, cnt, col,
					       par && kdim * cnt >= SD_CONV_GATHER_PAR);
					if (sd_gemm_bf16_packed(&pk, 0, cnt, 1.0f, col, SD_F32, cnt, 0.0f, yg + p0, ohw, brow, NULL))
						return -1;
				}
			}
		}
	return 0;
}

/* Deep convolutions (kdim = C*kh*kw of at least SD_CONV_KSLICE_MIN) over larger images: the
 * whole batch in one product, split along kdim instead of along the pixels. Slice by slice, rows
 * [k0, k0 + kc) of the batch-wide im2col matrix (at most KSLICE_COL_FLOATS) are gathered and
 * W[:, k0 : k0 + kc] (widened from f16/bf16 if need be) times them is added to the
 * og x n*ohw result, which is then scattered into NCHW with the bias. Each weight is packed
 * (and widened) once per call and every product is a large threaded sgemm; banding by pixels
 * instead re-packs the whole weight for every band of ~180 pixels, which kept the U-Net's
 * 1280-channel 3x3 convolutions at 32x32 near 0.7 of the sgemm rate. */
static int conv_kslices(const float *x, int64_t n, int64_t c, int64_t h, int64_t w,
                        const void *weight, sd_dtype wdt, int64_t o, int64_t kh, int64_t kw,
                        const float *bias, const sd_conv2d_params *p, int64_t ow, int64_t ohw,
                        float *y, int nth)
{
	int64_t g = p->groups, cg = c / g, og = o / g, kdim = cg * kh * kw, tot = n * ohw;
	int64_t kc = even_chunks(kdim, KSLICE_COL_FLOATS / tot, KSLICE_MIN_ROWS);
	float *col = sd_workspace(2, (size_t)(kc * tot));
	float *t = col ? sd_workspace(3, (size_t)(og * tot)) : NULL;
	float *wf = t && wdt != SD_F32 ? sd_workspace(4, (size_t)(og * kc)) : NULL;
	if (!t || (wdt != SD_F32 && !wf)) return -1;
	int par = nth > 1;
	for (int64_t gi = 0; gi < g; gi++) {
		for (int64_t k0 = 0; k0 < kdim; k0 += kc) {
			int64_t kn = kdim - k0 < kc ? kdim - k0 : kc;
			im2col(x, c, h, w, gi, cg, kh, kw, p, ow, ohw, k0, kn, 0, tot, col, par);
			const float *a = (const float *)weight + (gi * og) * kdim + k0;
			int64_t lda = kdim;
			if (wdt != SD_F32) {
				sd_widen_rows((const uint16_t *)weight + (gi * og) * kdim + k0, wdt, kdim, og, kn, wf);
				a = wf;
				lda = kn;
			}
			if (sd_sgemm(0, 0, og, tot, kn, 1.0f, a, lda, col, tot, k0 ? 1.0f : 0.0f, t, tot))
				return -1;
		}
		scatter_batch(t, tot, 0, o, og, gi, ohw, bias, y, par);
	}
	return 0;
}

int sd_conv2d(const float *x, int64_t n, int64_t c, int64_t h, int64_t w,
              const void *weight, sd_dtype wdt, int64_t o, int64_t kh, int64_t kw,
              const float *bias, const sd_conv2d_params *p, float *y)
{
	if (wdt != SD_F32 && wdt != SD_F16 && wdt != SD_BF16)
		return sd_seterr("conv2d: weight must be f32, f16 or bf16, not %s", sd_dtype_name(wdt));
	if (n < 0 || c <= 0 || h < 0 || w < 0 || o <= 0 || kh <= 0 || kw <= 0)
		return sd_seterr("conv2d: bad sizes n=%lld c=%lld h=%lld w=%lld o=%lld kh=%lld kw=%lld",
		                 (long long)n, (long long)c, (long long)h, (long long)w, (long long)o,
		                 (long long)kh, (long long)kw);
	if (p->stride_h <= 0 || p->stride_w <= 0 || p->dil_h <= 0 || p->dil_w <= 0 || p->pad_h < 0 ||
	    p->pad_w < 0 || p->groups <= 0)
		return sd_seterr("conv2d: stride and dilation must be positive, padding non-negative, "
		                 "groups positive");
	int64_t g = p->groups;
	if (c % g || o % g)
		return sd_seterr("conv2d: groups %lld must divide channels %lld and outputs %lld",
		                 (long long)g, (long long)c, (long long)o);
	int64_t oh = sd_conv2d_outsize(h, kh, p->stride_h, p->pad_h, p->dil_h);
	int64_t ow = sd_conv2d_outsize(w, kw, p->stride_w, p->pad_w, p->dil_w);
	if (oh <= 0 || ow <= 0)
		return sd_seterr("conv2d: kernel %lldx%lld does not fit the input %lldx%lld",
		                 (long long)kh, (long long)kw, (long long)h, (long long)w);
	int64_t cg = c / g, og = o / g, hw = h * w, ohw = oh * ow;
	int64_t kdim = cg * kh * kw;
	size_t esz = sd_dtype_size(wdt);
	const char *wbytes = weight;
	if (n == 0) return 0;

	int direct = kh == 1 && kw == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_h == 0 &&
	             p->pad_w == 0;
	if (sd_gemm_bf16_enabled()) return conv_bf16(x, n, c, h, w, wbytes, wdt, o, kh, kw, bias, p, y);
	int nth = omp_in_parallel() ? 1 : omp_get_max_threads();

	if (!direct && ohw <= SD_CONV_BATCH_MAXPIX && (n > 1 || wdt != SD_F32)) {
		/* Small images (16x16, 8x8): the whole batch in one product, W (og x kdim) times the
		 * im2col matrix of all images (kdim x n*ohw; column j = image j / ohw, pixel j % ohw),
		 * so that the product has n*ohw columns instead of ohw; its result (og x n*ohw) is then
		 * scattered into NCHW, adding the bias. The columns are banded (evenly) to bound the
		 * workspace. f16/bf16 weights are widened once per call: with a single band by row
		 * tiles (or inside sd_gemm_ex for thin products), with several bands all at once up
		 * front (o x kdim floats). Each output is one dot product over kdim, as in any GEMM,
		 * then + bias. A single image with f32 weights gains no columns: it keeps the paths
		 * below (on a loaded machine the per-thread bands ran ~10 % faster at 16x16). */
		int64_t tot = n * ohw;
		int64_t np = even_chunks(tot, BATCH_COL_FLOATS / kdim, MIN_COLS);
		int64_t nb = (tot + np - 1) / np;
		float *col = sd_workspace(2, (size_t)(kdim * np));
		float *t = col ? sd_workspace(3, (size_t)(og * np)) : NULL;
		if (!col || !t) return -1;
		const void *wa = weight;
		sd_dtype adt = wdt;
		if (wdt != SD_F32 && nb > 1) {
			float *wf = sd_workspace(4, (size_t)(o * kdim));
			if (!wf) return -1;
			sd_widen_rows(weight, wdt, kdim, o, kdim, wf);
			wa = wf;
			adt = SD_F32;
		}
		size_t aesz = sd_dtype_size(adt);
		int par = nth > 1;
		for (int64_t j0 = 0; j0 < tot; j0 += np) {
			int64_t cnt = tot - j0 < np ? tot - j0 : np;
			for (int64_t gi = 0; gi < g; gi++) {
				im2col(x, c, h, w, gi, cg, kh, kw, p, ow, ohw, 0, kdim, j0, cnt, col,
				       par && kdim * cnt >= SD_CONV_GATHER_PAR);
				if (adt != SD_F32 && tot >= SD_CONV_WIDEN_MINCOLS) {
					/* one band: row tiles of W widened in parallel, each multiplied with BLAS threads */
					int64_t rt = even_chunks(og, WIDEN_TILE_FLOATS / kdim, 16);
					float *wf = sd_workspace(4, (size_t)(rt * kdim));
					if (!wf) return -1;
					const uint16_t *w16 = (const uint16_t *)weight + gi * og * kdim;
					for (int64_t r0 = 0; r0 < og; r0 += rt) {
						int64_t rc = og - r0 < rt ? og - r0 : rt;
						sd_widen_rows(w16 + r0 * kdim, wdt, kdim, rc, kdim, wf);
						if (sd_sgemm(0, 0, rc, cnt, kdim, 1.0f, wf, kdim, col, cnt, 0.0f, t + r0 * cnt, cnt))
							return -1;
					}
				} else if (sd_gemm_ex(0, 0, og, cnt, kdim, 1.0f, (const char *)wa + (size_t)(gi * og * kdim) * aesz,
				               adt, kdim, col, SD_F32, cnt, 0.0f, t, cnt))
					return -1;
				scatter_batch(t, cnt, j0, o, og, gi, ohw, bias, y, par && og * cnt >= (1 << 16));
			}
		}
		return 0;
	}

	if (!direct && kdim >= SD_CONV_KSLICE_MIN && og * n * ohw <= KSLICE_OUT_FLOATS)
		return conv_kslices(x, n, c, h, w, weight, wdt, o, kh, kw, bias, p, ow, ohw, y, nth);

	int perthread = !direct && nth > 1 && ohw >= SD_CONV_PERTHREAD_MIN * nth;

	/* Bias: preset, then every product accumulates onto it; the per-thread bands add it to
	 * their own output instead, while it is still in cache. */
	float beta = 0.0f;
	if (bias && !perthread) {
		int par = !omp_in_parallel() && n * o * ohw >= (1 << 20);
#pragma omp parallel for schedule(static) if (par)
		for (int64_t i = 0; i < n * o; i++) {
			float *yp = y + i * ohw, bv = bias[i % o];
			for (int64_t j = 0; j < ohw; j++) yp[j] = bv;
		}
		beta = 1.0f;
	}

	if (direct) {
		for (int64_t b = 0; b < n; b++)
			for (int64_t gi = 0; gi < g; gi++)
				if (sd_gemm_ex(0, 0, og, hw, cg, 1.0f, wbytes + (size_t)(gi * og * kdim) * esz, wdt,
				               kdim, x + (b * c + gi * cg) * hw, SD_F32, hw, beta,
				               y + (b * o + gi * og) * ohw, ohw))
					return -1;
		return 0;
	}

	if (perthread) {
		/* Large images: each thread takes whole bands, gathers its im2col band into its own
		 * workspace and runs a single-threaded product on it. One parallel region for the
		 * whole convolution, and each band is consumed by the core that wrote it. */
		/* Every band re-packs (and for f16/bf16 re-widens) the weights: bands of 8 MB keep
		 * that cost to a few percent. */
		int64_t np = 2 * IM2COL_FLOATS / kdim;
		if (np < MIN_COLS) np = MIN_COLS;
		int64_t nb = (ohw + np - 1) / np;
		if (n * g == 1) nb = (nb + nth - 1) / nth * nth; /* even share per thread */
		np = (ohw + nb - 1) / nb;
		nb = (ohw + np - 1) / np;
		int64_t items = n * g * nb;
		int failed = 0;
#pragma omp parallel reduction(| : failed)
		{
			float *colt = sd_workspace(2, (size_t)(kdim * np));
			if (!colt) failed = 1;
#pragma omp for schedule(dynamic, 1)
			for (int64_t it = 0; it < items; it++) {
				if (failed) continue;
				int64_t band = it % nb, bg = it / nb, b = bg / g, gi = bg % g;
				int64_t p0 = band * np, cnt = ohw - p0 < np ? ohw - p0 : np;
				im2col(x + b * c * hw, c, h, w, gi, cg, kh, kw, p, ow, ohw, 0, kdim, p0, cnt, colt, 0);
				float *yb = y + (b * o + gi * og) * ohw + p0;
				failed |= sd_gemm_ex(0, 0, og, cnt, kdim, 1.0f, wbytes + (size_t)(gi * og * kdim) * esz, wdt,
				                     kdim, colt, SD_F32, cnt, 0.0f, yb, ohw) != 0;
				if (bias)
					for (int64_t oc = 0; oc < og; oc++) {
						float *yr = yb + oc * ohw, bv = bias[gi * og + oc];
						for (int64_t j = 0; j < cnt; j++) yr[j] += bv;
					}
			}
		}
		if (failed) return sd_seterr("conv2d: out of memory for the im2col workspaces");
		return 0;
	}

	/* Larger images on one thread (or called inside a parallel region): one band at a time,
	 * gathered by all threads, multiplied with BLAS threads (which split the output channels). */
	int64_t np = IM2COL_FLOATS / kdim;
	if (np < MIN_COLS) np = MIN_COLS;
	if (np > ohw) np = ohw;
	float *col = sd_workspace(2, (size_t)(kdim * np));
	if (!col) return -1;
	int par = nth > 1;
	for (int64_t b = 0; b < n; b++) {
		for (int64_t p0 = 0; p0 < ohw; p0 += np) {
			int64_t cnt = ohw - p0 < np ? ohw - p0 : np;
			for (int64_t gi = 0; gi < g; gi++) {
				im2col(x + b * c * hw, c, h, w, gi, cg, kh, kw, p, ow, ohw, 0, kdim, p0, cnt, col,
				       par && kdim * cnt >= SD_CONV_GATHER_PAR);
				if (sd_gemm_ex(0, 0, og, cnt, kdim, 1.0f, wbytes + (size_t)(gi * og * kdim) * esz,
				               wdt, kdim, col, SD_F32, cnt, beta, y + (b * o + gi * og) * ohw + p0,
				               ohw))
					return -1;
			}
		}
	}
	return 0;
}
