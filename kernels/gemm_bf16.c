/* bf16 products: the run-time dispatch. Without AVX512_BF16 (or with the f32 precision) the
 * callers keep the f32 path of gemm.c / conv2d.c; these entry points then refuse. */
#include "gemm_bf16.h"

#include <string.h>

#include "cpu.h"
#include "precision.h"
#include "sd_error.h"

int sd_gemm_bf16_enabled(void)
{
	return sd_get_precision() == SD_PRECISION_BF16 && sd_cpu_features()->avx512_bf16;
}

static int need_cpu(const char *op)
{
	if (sd_cpu_features()->avx512_bf16) return 0;
	return sd_seterr("%s: this CPU has no AVX512_BF16 (%s)", op, sd_cpu_describe());
}

int sd_bf16_pack_a(sd_bf16_pack *pk, int64_t m, int64_t k, const void *a, sd_dtype adt, int64_t lda)
{
	if (need_cpu("gemm_bf16")) return -1;
	if (m < 0 || k < 0 || lda < (k > 1 ? k : 1))
		return sd_seterr("gemm_bf16: bad sizes m=%lld k=%lld lda=%lld", (long long)m, (long long)k,
		                 (long long)lda);
	return sd_bf16_pack_a_avx512(pk, m, k, a, adt, lda);
}

int sd_gemm_bf16_packed(const sd_bf16_pack *pk, int transb, int64_t n, float alpha,
                        const void *b, sd_dtype bdt, int64_t ldb, float beta, float *c, int64_t ldc,
                        const float *bias_row, const float *bias_col)
{
	if (need_cpu("gemm_bf16")) return -1;
	int64_t bcols = transb ? pk->k : n;
	if (n < 0 || ldb < (bcols > 1 ? bcols : 1) || ldc < (n > 1 ? n : 1))
		return sd_seterr("gemm_bf16: bad sizes n=%lld k=%lld ldb=%lld ldc=%lld", (long long)n,
		                 (long long)pk->k, (long long)ldb, (long long)ldc);
	return sd_gemm_bf16_packed_avx512(pk, transb, n, alpha, b, bdt, ldb, beta, c, ldc, bias_row,
	                                  bias_col);
}

int sd_gemm_bf16(int transb, int64_t m, int64_t n, int64_t k, float alpha,
                 const void *a, sd_dtype adt, int64_t lda,
                 const void *b, sd_dtype bdt, int64_t ldb,
                 float beta, float *c, int64_t ldc, const float *bias_col)
{
	if (need_cpu("gemm_bf16")) return -1;
	if ((adt != SD_F32 && adt != SD_F16 && adt != SD_BF16) ||
	    (bdt != SD_F32 && bdt != SD_F16 && bdt != SD_BF16))
		return sd_seterr("gemm_bf16: operands must be f32, f16 or bf16 (got %s and %s)",
		                 sd_dtype_name(adt), sd_dtype_name(bdt));
	if (m < 0 || n < 0 || k < 0)
		return sd_seterr("gemm_bf16: negative size m=%lld n=%lld k=%lld", (long long)m,
		                 (long long)n, (long long)k);
	if (m == 0 || n == 0) return 0;
	size_t esz = sd_dtype_size(adt);
	int64_t rows = sd_bf16_rows_per_chunk(k);
	for (int64_t i0 = 0; i0 < m; i0 += rows) {
		int64_t mi = m - i0 < rows ? m - i0 : rows;
		sd_bf16_pack pk;
		if (sd_bf16_pack_a(&pk, mi, k, (const char *)a + (size_t)(i0 * lda) * esz, adt, lda)) return -1;
		if (sd_gemm_bf16_packed(&pk, transb, n, alpha, b, bdt, ldb, beta, c + i0 * ldc, ldc, NULL, bias_col))
			return -1;
	}
	return 0;
}
