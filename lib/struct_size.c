/* SPDX-License-Identifier: MIT */
/*
 * struct_size.c - the sizes every version gave the caller's structs, and
 * the copy of an older struct over this version's defaults.
 */
#include <stddef.h>
#include <string.h>

#include "struct_size.h"

/* sizeof a struct that ended with `field`: what a compiler gave it in the
 * version whose last field that was. */
#define SIZE_THROUGH(type, field)                                            \
    ((offsetof(type, field) + sizeof(((type *)0)->field) + _Alignof(type) - \
      1) / _Alignof(type) * _Alignof(type))

/* The sizes of each struct, oldest first, the last being this version's.
 * A version that grows a struct appends its size here: the size must grow
 * (a field that fits the old tail padding would leave the two versions
 * indistinguishable, so add explicit padding then). */
#define ROUTING_0_1 SIZE_THROUGH(moes_routing, n_experts)
#define SCATTER_ARGS_0_1 SIZE_THROUGH(moes_scatter_args, n_dropped)
#define SCATTER_ARGS_0_3 sizeof(moes_scatter_args)
#define GATHER_ARGS_0_1 SIZE_THROUGH(moes_gather_args, out_stride)
#define OPTIONS_0_1 SIZE_THROUGH(moes_context_options, cuda_device)
#define INFO_0_1 SIZE_THROUGH(moes_context_info, device_memory_bytes)
#define INFO_0_2 sizeof(moes_context_info)

static const size_t routing_sizes[] = {ROUTING_0_1};
static const size_t scatter_args_sizes[] = {SCATTER_ARGS_0_1,
                                             SCATTER_ARGS_0_3};
static const size_t gather_args_sizes[] = {GATHER_ARGS_0_1};
static const size_t options_sizes[] = {OPTIONS_0_1};
static const size_t info_sizes[] = {INFO_0_1, INFO_0_2};

/* Each list ends with this version's size, and sizes only grow. */
_Static_assert(ROUTING_0_1 == sizeof(moes_routing), "moes_routing grew");
_Static_assert(SCATTER_ARGS_0_1 < SCATTER_ARGS_0_3,
               "each version's moes_scatter_args is larger than the last");
_Static_assert(GATHER_ARGS_0_1 == sizeof(moes_gather_args),
               "moes_gather_args grew");
_Static_assert(OPTIONS_0_1 == sizeof(moes_context_options),
               "moes_context_options grew");
_Static_assert(INFO_0_1 < INFO_0_2,
               "each version's moes_context_info is larger than the last");

static int known_size(size_t given, const size_t *sizes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (sizes[i] == given)
            return 1;
    return 0;
}

static int check_size(moes_context *ctx, const char *name, const char *type,
                      size_t given, const size_t *sizes, size_t n)
{
    const size_t current = sizes[n - 1];
    if (known_size(given, sizes, n))
        return MOES_OK;
    if (given > current)
        return moes_set_error(ctx, MOES_ERR_INVALID_ARGUMENT,
            "%s->struct_size = %zu is larger than sizeof(%s) = %zu in this "
            "version (%d.%d.%d): was the program compiled against a newer "
            "libmoescatter?", name, given, type, current,
            MOES_VERSION_MAJOR, MOES_VERSION_MINOR, MOES_VERSION_PATCH);
    return moes_set_error(ctx, MOES_ERR_INVALID_ARGUMENT,
        "%s->struct_size = %zu is not the size of %s in any version "
        "(expected %zu, sizeof the struct in this version, or an earlier "
        "version's)", name, given, type, current);
}

#define CHECK(ctx, name, type, given, sizes)                                  \
    check_size(ctx, name, #type, given, sizes,                                \
               sizeof(sizes) / sizeof(sizes[0]))

/* The caller's bytes over the defaults already in out; struct_size then
 * says this version's size, for the code that reads out. */
static void copy_over(void *out, size_t out_size, const void *given,
                      size_t given_size)
{
    memcpy(out, given, given_size);
    memcpy(out, &out_size, sizeof out_size);
}

int moes_scatter_args_size_known(size_t size)
{
    return known_size(size, scatter_args_sizes,
                      sizeof scatter_args_sizes /
                          sizeof scatter_args_sizes[0]);
}

size_t moes_scatter_args_size_0_2(void)
{
    return SCATTER_ARGS_0_1;
}

int moes_routing_from_caller(moes_context *ctx, const moes_routing *given,
                             moes_routing *out)
{
    MOES_TRY(CHECK(ctx, "routing", moes_routing, given->struct_size,
                   routing_sizes));
    moes_routing_init(out);
    copy_over(out, sizeof *out, given, given->struct_size);
    return MOES_OK;
}

int moes_scatter_args_from_caller(moes_context *ctx,
                                  const moes_scatter_args *given,
                                  moes_scatter_args *out)
{
    MOES_TRY(CHECK(ctx, "args", moes_scatter_args, given->struct_size,
                   scatter_args_sizes));
    moes_scatter_args_init(out);
    copy_over(out, sizeof *out, given, given->struct_size);
    return MOES_OK;
}

int moes_gather_args_from_caller(moes_context *ctx,
                                 const moes_gather_args *given,
                                 moes_gather_args *out)
{
    MOES_TRY(CHECK(ctx, "args", moes_gather_args, given->struct_size,
                   gather_args_sizes));
    moes_gather_args_init(out);
    copy_over(out, sizeof *out, given, given->struct_size);
    return MOES_OK;
}

int moes_options_from_caller(const moes_context_options *given,
                             moes_context_options *out)
{
    MOES_TRY(CHECK(NULL, "opts", moes_context_options, given->struct_size,
                   options_sizes));
    moes_context_options_init(out);
    copy_over(out, sizeof *out, given, given->struct_size);
    return MOES_OK;
}

int moes_info_size_check(moes_context *ctx, const moes_context_info *info)
{
    return CHECK(ctx, "info", moes_context_info, info->struct_size,
                 info_sizes);
}

void moes_info_to_caller(moes_context_info *info,
                         const moes_context_info *full)
{
    const size_t size = info->struct_size;
    memcpy(info, full, size);
    info->struct_size = size;
}
