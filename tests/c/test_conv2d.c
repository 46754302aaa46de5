/* kernels/conv2d against a naive double-precision convolution. */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "conv2d.h"
#include "dtype.h"
#include "gemm.h"
#include "sd_error.h"

static void ref_conv(const float *x, int64_t n, int64_t c, int64_t h, int64_t w, const float *wt,
                     int64_t o, int64_t kh, int64_t kw, const float *bias, const sd_conv2d_params *p,
                     int64_t oh, int64_t ow, double *want, double *mag)
{
	int64_t g = p->groups, cg = c / g, og = o / g;
	for (int64_t b = 0; b < n; b++)
		for (int64_t oc = 0; oc < o; oc++) {
			int64_t gi = oc / og;
			for (int64_t oy = 0; oy < oh; oy++)
				for (int64_t ox = 0; ox < ow; ox++) {
					double s = bias ? bias[oc] : 0, sa = bias ? fabs(bias[oc]) : 0;
					for (int64_t ci = 0; ci < cg; ci++)
						for (int64_t ki = 0; ki < kh; ki++)
							for (int64_t kj = 0; kj < kw; kj++) {
								int64_t iy = oy * p->stride_h - p->pad_h + ki * p->dil_h;
								int64_t ix = ox * p->stride_w - p->pad_w + kj * p->dil_w;
								if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
								double t = (double)x[((b * c + gi * cg + ci) * h + iy) * w + ix] *
								           wt[((oc * cg + ci) * kh + ki) * kw + kj];
								s += t;
								sa += fabs(t);
							}
					int64_t idx = ((b * o + oc) * oh + oy) * ow + ox;
					want[idx] = s;
					mag[idx] = sa;
				}
		}
}

static int one_conv(int64_t n, int64_t c, int64_t h, int64_t w, int64_t o, int64_t kh, int64_t kw,
                    sd_conv2d_params p, int withbias, sd_dtype wdt, unsigned long long seed)
{
	int64_t oh = sd_conv2d_outsize(h, kh, p.stride_h, p.pad_h, p.dil_h);
	int64_t ow = sd_conv2d_outsize(w, kw, p.stride_w, p.pad_w, p.dil_w);
	int64_t nx = n * c * h * w, nw = o * (c / p.groups) * kh * kw, ny = n * o * oh * ow;
	float *x = malloc((size_t)nx * 4), *wt = malloc((size_t)nw * 4), *bias = malloc((size_t)o * 4);
	float *y = malloc((size_t)ny * 4 + 4);
	uint16_t *wh = malloc((size_t)nw * 2);
	double *want = malloc((size_t)ny * 8 + 8), *mag = malloc((size_t)ny * 8 + 8);
	check_fill(x, nx, seed);
	check_fill(wt, nw, seed + 1);
	check_fill(bias, o, seed + 2);
	if (wdt != SD_F32) { /* the reference uses the rounded weights */
		sd_convert(wt, SD_F32, wh, wdt, (size_t)nw);
		sd_convert(wh, wdt, wt, SD_F32, (size_t)nw);
	}
	ref_conv(x, n, c, h, w, wt, o, kh, kw, withbias ? bias : NULL, &p, oh, ow, want, mag);
	for (int64_t i = 0; i < ny; i++) y[i] = NAN; /* every output must be written */
	int rc = sd_conv2d(x, n, c, h, w, wdt == SD_F32 ? (void *)wt : (void *)wh, wdt, o, kh, kw,
	                   withbias ? bias : NULL, &p, y);
	CHECK(rc == 0, "conv2d failed: %s", sd_geterr());
	double worst = 0;
	for (int64_t i = 0; i < ny; i++) {
		double r = fabs(y[i] - want[i]) / (1e-5 * mag[i] + 1e-6);
		if (!(r <= worst)) worst = r;
	}
	CHECK(worst <= 1, "n=%lld c=%lld %lldx%lld o=%lld k=%lldx%lld s=%lld,%lld p=%lld,%lld d=%lld,%lld "
	      "g=%lld %s: error %.3g x tolerance", (long long)n, (long long)c, (long long)h, (long long)w,
	      (long long)o, (long long)kh, (long long)kw, (long long)p.stride_h, (long long)p.stride_w,
	      (long long)p.pad_h, (long long)p.pad_w, (long long)p.dil_h, (long long)p.dil_w,
	      (long long)p.groups, sd_dtype_name(wdt), worst);
	free(x); free(wt); free(bias); free(y); free(wh); free(want); free(mag);
	return rc;
}

static sd_conv2d_params P(int64_t s, int64_t pad, int64_t d, int64_t g)
{
	return (sd_conv2d_params){s, s, pad, pad, d, d, g};
}

static void test_basic(void)
{
	one_conv(1, 3, 8, 8, 4, 3, 3, P(1, 1, 1, 1), 1, SD_F32, 1);   /* 3x3 same */
	one_conv(2, 5, 7, 9, 6, 3, 3, P(1, 0, 1, 1), 0, SD_F32, 2);   /* valid, odd sizes */
	one_conv(2, 8, 6, 5, 7, 1, 1, P(1, 0, 1, 1), 1, SD_F32, 3);   /* 1x1 direct */
	one_conv(1, 1, 1, 1, 1, 1, 1, P(1, 0, 1, 1), 1, SD_F32, 4);   /* all ones */
	one_conv(1, 4, 1, 1, 3, 3, 3, P(1, 1, 1, 1), 1, SD_F32, 5);   /* 1x1 image, 3x3 kernel */
	one_conv(3, 2, 5, 1, 2, 3, 1, P(1, 1, 1, 1), 0, SD_F32, 6);   /* width 1 */
}

static void test_stride_pad_dil(void)
{
	one_conv(1, 3, 9, 9, 4, 3, 3, P(2, 1, 1, 1), 1, SD_F32, 10);  /* downsample */
	one_conv(2, 4, 10, 7, 5, 3, 3, P(2, 0, 1, 1), 1, SD_F32, 11);
	one_conv(1, 3, 11, 12, 2, 3, 3, P(1, 2, 2, 1), 1, SD_F32, 12); /* dilation */
	one_conv(1, 2, 8, 8, 3, 1, 1, P(2, 0, 1, 1), 1, SD_F32, 13);   /* 1x1 stride 2 */
	one_conv(1, 2, 4, 4, 3, 1, 1, P(1, 1, 1, 1), 1, SD_F32, 14);   /* 1x1 padded */
	sd_conv2d_params q = {1, 3, 2, 0, 1, 2, 1};                    /* asymmetric */
	one_conv(2, 3, 9, 13, 4, 2, 3, q, 1, SD_F32, 15);
	one_conv(1, 2, 7, 7, 2, 7, 7, P(1, 3, 1, 1), 1, SD_F32, 16);   /* big kernel */
	one_conv(1, 3, 5, 5, 2, 5, 5, P(3, 4, 2, 1), 1, SD_F32, 17);   /* pad larger than input part */
}

static void test_groups(void)
{
	one_conv(2, 6, 7, 8, 9, 3, 3, P(1, 1, 1, 3), 1, SD_F32, 20);
	one_conv(1, 4, 5, 5, 4, 3, 3, P(1, 1, 1, 4), 1, SD_F32, 21); /* depthwise */
	one_conv(1, 4, 5, 5, 8, 1, 1, P(1, 0, 1, 2), 1, SD_F32, 22); /* grouped 1x1 */
	one_conv(2, 6, 9, 9, 6, 3, 3, P(2, 2, 2, 2), 0, SD_F32, 23);
}

static void test_half(void)
{
	one_conv(1, 5, 9, 9, 7, 3, 3, P(1, 1, 1, 1), 1, SD_F16, 30);
	one_conv(2, 6, 6, 6, 4, 1, 1, P(1, 0, 1, 2), 1, SD_BF16, 31);
	one_conv(1, 4, 7, 7, 6, 3, 3, P(2, 1, 1, 2), 1, SD_BF16, 32);
	one_conv(1, 8, 5, 5, 3, 1, 1, P(1, 0, 1, 1), 0, SD_F16, 33);
}

static void test_bands(void)
{
	/* Large images go to per-thread bands (8 MB each, split evenly over the threads), small ones
	 * to shared bands of 4 MB (>= 128 pixels); with one thread everything is shared. */
	one_conv(1, 32, 64, 64, 8, 3, 3, P(1, 1, 1, 1), 1, SD_F32, 40);   /* 1 thread: bands of 3640 px */
	one_conv(1, 3, 25, 21, 4, 3, 3, P(1, 1, 1, 1), 1, SD_F32, 45);    /* 2 threads: 263 px, mid-row */
	one_conv(1, 256, 15, 15, 4, 3, 3, P(1, 1, 1, 1), 1, SD_F32, 46);  /* shared: 128 px, mid-row */
	/* the per-thread band path with a batch and groups */
	one_conv(2, 6, 24, 24, 6, 3, 3, P(1, 1, 1, 3), 1, SD_F32, 43);
	one_conv(2, 4, 40, 30, 4, 3, 3, P(1, 1, 2, 2), 0, SD_BF16, 44);
	/* bigger than a widened weight tile: o > 128 rows with kdim 9216 */
	one_conv(1, 1024, 3, 3, 130, 3, 3, P(1, 1, 1, 1), 1, SD_BF16, 42);
}

static void test_batch_wide(void)
{
	/* images of <= 256 output pixels, batch > 1 or half weights: the im2col matrix of the whole
	 * batch, one product, then scattered into NCHW (columns = images x pixels) */
	one_conv(2, 16, 8, 8, 12, 3, 3, P(1, 1, 1, 1), 1, SD_F16, 50);  /* 128 columns: f16 widened in the product */
	one_conv(1, 16, 8, 8, 12, 3, 3, P(1, 1, 1, 1), 1, SD_BF16, 57); /* one image, half weights */
	one_conv(4, 8, 8, 8, 10, 3, 3, P(1, 1, 1, 2), 1, SD_F16, 51);   /* 256 columns: row tiles widened, groups */
	one_conv(2, 12, 16, 16, 20, 3, 3, P(1, 1, 1, 1), 0, SD_BF16, 52); /* 512 columns, bf16, no bias */
	one_conv(3, 5, 9, 9, 7, 3, 3, P(2, 1, 1, 1), 1, SD_F32, 53);    /* stride 2, 25 px per image */
	one_conv(3, 6, 5, 7, 6, 3, 3, P(1, 0, 1, 3), 1, SD_F32, 54);    /* 3x5 output, groups */
	/* kdim 9216 x 1792 columns > the 12 Mi-float budget: 2 bands of 896 columns, the band edge in
	 * the middle of an image; f16 then widened once up front */
	one_conv(7, 1024, 16, 16, 4, 3, 3, P(1, 1, 1, 1), 1, SD_F32, 55);
	one_conv(7, 1024, 16, 16, 5, 3, 3, P(1, 1, 1, 1), 1, SD_F16, 56);
}

static void test_kslices(void)
{
	/* kdim >= 4608 over larger images: the batch-wide product in slices of kdim (at most 4 Mi
	 * floats of im2col each), accumulated, then scattered into NCHW with the bias */
	one_conv(1, 512, 20, 20, 4, 3, 3, P(1, 1, 1, 1), 1, SD_F16, 41);   /* one slice */
	one_conv(1, 1024, 15, 15, 4, 3, 3, P(1, 1, 1, 1), 1, SD_F32, 47);  /* one slice, kdim 9216 */
	one_conv(2, 512, 24, 24, 6, 3, 3, P(1, 1, 1, 1), 1, SD_F16, 48);   /* 2 slices of 2304 rows */
	one_conv(1, 601, 32, 32, 5, 3, 3, P(1, 1, 1, 1), 0, SD_BF16, 49);  /* a slice edge inside a channel */
	one_conv(2, 1024, 20, 20, 6, 3, 3, P(1, 1, 1, 2), 1, SD_F32, 58);  /* groups, 2 slices each */
	one_conv(1, 520, 33, 31, 3, 3, 3, P(2, 1, 1, 1), 1, SD_F16, 59);   /* stride 2, odd sizes */
}

static void test_errors(void)
{
	float x[16] = {0}, w[16] = {0}, y[16];
	sd_conv2d_params p = P(1, 0, 1, 1);
	CHECK(sd_conv2d(x, 1, 1, 2, 2, w, SD_F32, 1, 3, 3, NULL, &p, y) == -1, "kernel larger than input");
	p = P(0, 0, 1, 1);
	CHECK(sd_conv2d(x, 1, 1, 2, 2, w, SD_F32, 1, 1, 1, NULL, &p, y) == -1, "stride 0");
	p = P(1, 0, 1, 2);
	CHECK(sd_conv2d(x, 1, 3, 2, 2, w, SD_F32, 2, 1, 1, NULL, &p, y) == -1, "groups not dividing");
	p = P(1, 0, 1, 1);
	CHECK(sd_conv2d(x, 1, 1, 2, 2, w, SD_I32, 1, 1, 1, NULL, &p, y) == -1, "i32 weight");
	CHECK(sd_conv2d_outsize(64, 3, 2, 1, 1) == 32, "outsize 64/3/2/1");
	CHECK(sd_conv2d_outsize(5, 3, 1, 0, 3) == 0, "outsize dilated too big");
}

int main(void)
{
	RUN("conv2d: basic shapes, 1x1 direct, size-1 dims", test_basic());
	RUN("conv2d: stride, padding, dilation, asymmetric", test_stride_pad_dil());
	RUN("conv2d: deep convolutions in slices of kdim", test_kslices());
	RUN("conv2d: groups and depthwise", test_groups());
	RUN("conv2d: f16/bf16 weights", test_half());
	RUN("conv2d: im2col bands and weight tiles", test_bands());
	RUN("conv2d: small images, batch-wide im2col", test_batch_wide());
	RUN("conv2d: rejected arguments", test_errors());
	sd_workspace_release();
	CHECK_DONE();
}
