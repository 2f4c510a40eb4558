/* SPDX-License-Identifier: MIT */
/*
 * gpu_stub.c - the CUDA backend's place when the library is built without
 * CUDA: opening it fails with a reason that says so, and AUTO then uses
 * the CPU.
 */
#include <stdio.h>

#include "internal.h"

const int moes_cuda_compiled = 0;

static int stub_open(moes_context *ctx, char *reason, size_t reason_len)
{
    (void)ctx;
    snprintf(reason, reason_len, "the library was built without CUDA");
    return MOES_ERR_BACKEND_UNAVAILABLE;
}

/* Only open() is ever called: it always fails, so no context holds this
 * table. The other slots stay NULL. */
const moes_backend_ops moes_cuda_backend = {
    .name = "cuda",
    .open = stub_open,
};
