/* The process-wide precision of matrix products (linear layers, convolutions, gemm with a
 * row-major left operand, attention).
 *
 *   f32  (default) products in float32 through cblas_sgemm;
 *   bf16 operands rounded to bfloat16 (8-bit mantissa), products accumulated in float32 with
 *        AVX512_BF16 dot-product instructions (kernels/gemm_bf16.h). On a CPU without
 *        AVX512_BF16 the setting is kept but the f32 kernels run.
 *
 * The initial value comes from SDLUA_PRECISION (f32 or bf16) when set. */
#ifndef SD_PRECISION_H
#define SD_PRECISION_H

typedef enum sd_precision { SD_PRECISION_F32 = 0, SD_PRECISION_BF16 = 1 } sd_precision;

sd_precision sd_get_precision(void);
void sd_set_precision(sd_precision p);
/* "f32" or "bf16" */
const char *sd_precision_name(sd_precision p);
/* 0 and *p set for "f32" / "bf16" (also "fp32", "float32", "bfloat16"), -1 otherwise. */
int sd_precision_parse(const char *name, sd_precision *p);

#endif
