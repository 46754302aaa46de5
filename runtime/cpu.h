/* What this CPU can do, read once with cpuid; kernels pick their ISA-specific variant from it. */
#ifndef SD_CPU_H
#define SD_CPU_H

typedef struct sd_cpu {
	int avx2, fma, f16c;          /* AVX2 + FMA + F16C together: the "avx2" kernels */
	int avx512;                   /* F, BW, VL, DQ: the "avx512" kernels */
	int avx512_bf16, avx512_vnni;
} sd_cpu;

const sd_cpu *sd_cpu_features(void);
/* Names of the features found, e.g. "avx2 fma f16c avx512 avx512_bf16". */
const char *sd_cpu_describe(void);

#endif
