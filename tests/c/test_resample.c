/* kernels/resample against naive references of torch's interpolate (align_corners=False) and
 * known values from torch. */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "resample.h"
#include "sd_error.h"

static sd_tensor randt(int nd, const int64_t *shape, unsigned long long seed)
{
	sd_tensor t;
	if (sd_tensor_new(&t, SD_F32, nd, shape) != 0) abort();
	check_fill(sd_tensor_data(&t), sd_tensor_numel(&t), seed);
	return t;
}

/* How many values of a nearest resize pr (planes, oh, ow) of px (planes, ih, iw), both contiguous,
 * differ from px at torch's source index (i * ih / oh, j * iw / ow); every `step`-th plane is
 * checked. */
static int nearest_mismatches(const float *px, const float *pr, int64_t planes, int64_t step, int64_t ih, int64_t iw,
                              int64_t oh, int64_t ow)
{
	int bad = 0;
	for (int64_t p = 0; p < planes; p += step)
		for (int64_t i = 0; i < oh; i++)
			for (int64_t j = 0; j < ow; j++) {
				/* the exact rational floor agrees with torch's float formula for these sizes */
				int64_t si = i * ih / oh, sj = j * iw / ow;
				if (pr[(p * oh + i) * ow + j] != px[(p * ih + si) * iw + sj]) bad++;
			}
	return bad;
}

static void test_nearest_2x(void)
{
	int64_t s[4] = {2, 3, 5, 7};
	sd_tensor x = randt(4, s, 1), r;
	CHECK(sd_interpolate(&x, SD_RESAMPLE_NEAREST, 0, 0, 2, 2, &r) == 0, "%s", sd_geterr());
	CHECK(r.shape[2] == 10 && r.shape[3] == 14, "shape");
	const float *px = sd_tensor_data(&x), *pr = sd_tensor_data(&r);
	int bad = nearest_mismatches(px, pr, 6, 1, 5, 7, 10, 14);
	CHECK(bad == 0, "2x: %d wrong", bad);
	sd_tensor_release(&r);
	/* 3x, and a strided input */
	sd_tensor xt;
	sd_tensor_transpose(&x, &xt, 2, 3); /* (2, 3, 7, 5) */
	CHECK(sd_interpolate(&xt, SD_RESAMPLE_NEAREST, 0, 0, 3, 3, &r) == 0, "%s", sd_geterr());
	pr = sd_tensor_data(&r);
	bad = 0;
	for (int64_t p = 0; p < 6; p++)
		for (int64_t i = 0; i < 21; i++)
			for (int64_t j = 0; j < 15; j++)
				if (pr[(p * 21 + i) * 15 + j] != px[(p * 5 + j / 3) * 7 + i / 3]) bad++;
	CHECK(bad == 0, "3x strided: %d wrong", bad);
	sd_tensor_release(&r);
	sd_tensor_release(&xt);
	sd_tensor_release(&x);
}

static void test_nearest_size(void)
{
	/* torch: src = min(floor(dst * (float)in / out), in - 1) */
	static const int64_t sizes[][4] = {{5, 3, 7, 7}, {3, 7, 4, 9}, {64, 48, 64, 80}, {1, 5, 6, 1}, {10, 3, 3, 10}};
	for (size_t c = 0; c < sizeof sizes / sizeof sizes[0]; c++) {
		int64_t ih = sizes[c][0], oh = sizes[c][1], iw = sizes[c][2], ow = sizes[c][3];
		int64_t s[4] = {1, 2, ih, iw};
		sd_tensor x = randt(4, s, 10 + c), r;
		CHECK(sd_interpolate(&x, SD_RESAMPLE_NEAREST, oh, ow, 0, 0, &r) == 0, "%s", sd_geterr());
		int bad = nearest_mismatches(sd_tensor_data(&x), sd_tensor_data(&r), 2, 1, ih, iw, oh, ow);
		CHECK(bad == 0, "size case %zu: %d wrong", c, bad);
		sd_tensor_release(&r);
		sd_tensor_release(&x);
	}
}

static double ref_src(int64_t d, int64_t in, int64_t out, int64_t *i0, int64_t *i1)
{
	double s = ((double)d + 0.5) * (double)in / (double)out - 0.5;
	if (s < 0) s = 0;
	*i0 = (int64_t)floor(s);
	if (*i0 > in - 1) *i0 = in - 1;
	*i1 = *i0 + 1 < in ? *i0 + 1 : in - 1;
	return s - (double)*i0;
}

static void test_bilinear(void)
{
	static const int64_t sizes[][4] = {{4, 8, 4, 8}, {7, 3, 5, 11}, {1, 4, 2, 2}, {33, 64, 17, 64}, {64, 32, 64, 32}};
	for (size_t c = 0; c < sizeof sizes / sizeof sizes[0]; c++) {
		int64_t ih = sizes[c][0], oh = sizes[c][1], iw = sizes[c][2], ow = sizes[c][3];
		int64_t s[4] = {2, 3, ih, iw};
		sd_tensor x = randt(4, s, 20 + c), r;
		CHECK(sd_interpolate(&x, SD_RESAMPLE_BILINEAR, oh, ow, 0, 0, &r) == 0, "%s", sd_geterr());
		const float *px = sd_tensor_data(&x), *pr = sd_tensor_data(&r);
		double worst = 0;
		for (int64_t p = 0; p < 6; p++)
			for (int64_t i = 0; i < oh; i++) {
				int64_t a0, a1, b0, b1;
				double ly = ref_src(i, ih, oh, &a0, &a1);
				for (int64_t j = 0; j < ow; j++) {
					double lx = ref_src(j, iw, ow, &b0, &b1);
					const float *q = px + p * ih * iw;
					double w = (1 - ly) * ((1 - lx) * q[a0 * iw + b0] + lx * q[a0 * iw + b1]) +
					           ly * ((1 - lx) * q[a1 * iw + b0] + lx * q[a1 * iw + b1]);
					double e = fabs(pr[(p * oh + i) * ow + j] - w);
					if (!(e <= worst)) worst = e;
				}
			}
		CHECK(worst < 1e-6, "bilinear case %zu: err %g", c, worst);
		sd_tensor_release(&r);
		sd_tensor_release(&x);
	}
	/* torch.nn.functional.interpolate(torch.tensor([[[[1., 2], [3, 4]]]]), size=4, mode="bilinear") */
	static const float want4[16] = {1.0f, 1.25f, 1.75f, 2.0f, 1.5f, 1.75f, 2.25f, 2.5f,
	                                2.5f, 2.75f, 3.25f, 3.5f, 3.0f, 3.25f, 3.75f, 4.0f};
	int64_t s2[4] = {1, 1, 2, 2};
	sd_tensor x, r;
	sd_tensor_new(&x, SD_F32, 4, s2);
	float *p = sd_tensor_data(&x);
	p[0] = 1, p[1] = 2, p[2] = 3, p[3] = 4;
	CHECK(sd_interpolate(&x, SD_RESAMPLE_BILINEAR, 0, 0, 2, 2, &r) == 0, "scale 2");
	CHECK(memcmp(sd_tensor_data(&r), want4, sizeof want4) == 0, "2x2 -> 4x4 values");
	sd_tensor_release(&r);
	sd_tensor_release(&x);
	/* interpolate(arange(16).view(1,1,4,4), size=2, mode="bilinear") = [[2.5, 4.5], [10.5, 12.5]] */
	int64_t s4[3] = {1, 4, 4};
	sd_tensor_new(&x, SD_F32, 3, s4);
	p = sd_tensor_data(&x);
	for (int i = 0; i < 16; i++) p[i] = (float)i;
	CHECK(sd_interpolate(&x, SD_RESAMPLE_BILINEAR, 2, 2, 0, 0, &r) == 0 && r.ndim == 3, "downscale");
	const float *q = sd_tensor_data(&r);
	CHECK(q[0] == 2.5f && q[1] == 4.5f && q[2] == 10.5f && q[3] == 12.5f, "downscale values %g %g %g %g", q[0], q[1], q[2], q[3]);
	sd_tensor_release(&r);
	/* errors */
	CHECK(sd_interpolate(&x, SD_RESAMPLE_BILINEAR, 0, 0, 0, 0, &r) != 0, "no size or scale");
	CHECK(sd_interpolate(&x, SD_RESAMPLE_BILINEAR, 0, 0, 0.1, 0.1, &r) != 0 && strstr(sd_geterr(), "empty"), "empty output");
	sd_tensor_release(&x);
	int64_t s1[2] = {4, 4};
	sd_tensor_new(&x, SD_F32, 2, s1);
	CHECK(sd_interpolate(&x, SD_RESAMPLE_NEAREST, 8, 8, 0, 0, &r) != 0 && strstr(sd_geterr(), "(4, 4)"), "2-D input error");
	sd_tensor_release(&x);
}

static void test_large(void)
{
	/* a VAE-decoder-sized 2x upsample (parallel path) */
	int64_t s[4] = {1, 128, 128, 128};
	sd_tensor x = randt(4, s, 3), r;
	CHECK(sd_interpolate(&x, SD_RESAMPLE_NEAREST, 0, 0, 2, 2, &r) == 0, "%s", sd_geterr());
	int bad = nearest_mismatches(sd_tensor_data(&x), sd_tensor_data(&r), 128, 7, 128, 128, 256, 256);
	CHECK(bad == 0, "%d wrong", bad);
	sd_tensor_release(&r);
	sd_tensor_release(&x);
}

int main(void)
{
	RUN("resample: nearest 2x and 3x (strided input)", test_nearest_2x());
	RUN("resample: nearest to a size (torch index rule)", test_nearest_size());
	RUN("resample: bilinear align_corners=False, torch values, errors", test_bilinear());
	RUN("resample: nearest 2x on a large tensor", test_large());
	CHECK_DONE();
}
