/* SPDX-License-Identifier: MIT */
/*
 * bench_presets.c - the MoE layers of real models that `moescatter bench`
 * times.
 */
#include <string.h>

#include "bench.h"

const bench_preset bench_presets[] = {
    /* DeepSeek-V3: fp8 e4m3 activations with one fp32 scale per 128
     * values, as DeepGEMM takes them; bf16 expert outputs. */
    {"deepseek-v3", "DeepSeek-V3, one rank holding every expert", 7168, 256,
     256, 8, MOES_DTYPE_FP8_E4M3, 128, MOES_DTYPE_BF16, MOES_DTYPE_BF16},
    /* The same with 8-way expert parallelism: this rank holds experts
     * 0..31; the expert map sends the other 224 to -1. */
    {"deepseek-v3-ep8", "DeepSeek-V3, rank 0 of 8-way expert parallelism",
     7168, 256, 32, 8, MOES_DTYPE_FP8_E4M3, 128, MOES_DTYPE_BF16,
     MOES_DTYPE_BF16},
    {"qwen3-30b-a3b", "Qwen3-30B-A3B", 2048, 128, 128, 8, MOES_DTYPE_BF16, 0,
     MOES_DTYPE_BF16, MOES_DTYPE_BF16},
    {"mixtral", "Mixtral 8x7B", 4096, 8, 8, 2, MOES_DTYPE_BF16, 0,
     MOES_DTYPE_BF16, MOES_DTYPE_BF16},
};

const int bench_n_presets =
    (int)(sizeof bench_presets / sizeof bench_presets[0]);

const bench_preset *bench_find_preset(const char *name)
{
    for (int i = 0; i < bench_n_presets; i++)
        if (strcmp(bench_presets[i].name, name) == 0)
            return &bench_presets[i];
    return NULL;
}

const char *bench_dtype_name(int dtype)
{
    switch (dtype) {
    case MOES_DTYPE_FP8_E4M3: return "fp8_e4m3";
    case MOES_DTYPE_FP8_E5M2: return "fp8_e5m2";
    case MOES_DTYPE_BF16: return "bf16";
    case MOES_DTYPE_FP16: return "fp16";
    case MOES_DTYPE_FP32: return "fp32";
    case MOES_DTYPE_INT32: return "int32";
    case MOES_DTYPE_INT64: return "int64";
    default: return "unknown";
    }
}
