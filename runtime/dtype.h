/* Element types and conversion between them. */
#ifndef SD_DTYPE_H
#define SD_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum sd_dtype { SD_F32, SD_F16, SD_BF16, SD_I32, SD_I64, SD_U8, SD_NDTYPES } sd_dtype;

size_t sd_dtype_size(sd_dtype dt);
const char *sd_dtype_name(sd_dtype dt);              /* "f32", "f16", ... */
int sd_dtype_from_name(const char *name, sd_dtype *dt); /* 0, or -1 for an unknown name */
int sd_dtype_is_float(sd_dtype dt);

/* Scalar conversions, round to nearest even; NaN stays NaN, overflow gives inf. */
float sd_f16_to_f32(uint16_t h);
uint16_t sd_f32_to_f16(float f);
float sd_bf16_to_f32(uint16_t b);
uint16_t sd_f32_to_bf16(float f);

/* n contiguous elements from src (type st) to dst (type dt). Float to integer truncates toward
 * zero and saturates at the integer type's range (NaN gives 0). Uses F16C / AVX-512 when the
 * CPU has them. */
void sd_convert(const void *src, sd_dtype st, void *dst, sd_dtype dt, size_t n);

/* Bulk half-precision widening and narrowing, the hot paths of sd_convert. */
void sd_f16_to_f32_n(const uint16_t *src, float *dst, size_t n);
void sd_f32_to_f16_n(const float *src, uint16_t *dst, size_t n);
void sd_bf16_to_f32_n(const uint16_t *src, float *dst, size_t n);
void sd_f32_to_bf16_n(const float *src, uint16_t *dst, size_t n);

#endif
