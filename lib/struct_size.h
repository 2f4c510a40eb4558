/* SPDX-License-Identifier: MIT */
/*
 * struct_size.h - the caller's structs as any version laid them out.
 *
 * Structs only grow at the end. A caller compiled against an earlier
 * version passes the struct_size it knew; these functions accept every
 * size a version has had, copy that many bytes over the defaults, and
 * reject any other size, larger ones included (a program compiled
 * against a newer version than the library it runs with).
 */
#ifndef MOES_STRUCT_SIZE_H
#define MOES_STRUCT_SIZE_H

#include "internal.h"

/* Each fills *out with the caller's struct over the defaults of this
 * version (struct_size set to this version's), or returns
 * MOES_ERR_INVALID_ARGUMENT with a message on ctx (NULL: the thread's
 * creation message). given must not be NULL. */
int moes_routing_from_caller(moes_context *ctx, const moes_routing *given,
                             moes_routing *out);
int moes_scatter_args_from_caller(moes_context *ctx,
                                  const moes_scatter_args *given,
                                  moes_scatter_args *out);
int moes_gather_args_from_caller(moes_context *ctx,
                                 const moes_gather_args *given,
                                 moes_gather_args *out);
int moes_options_from_caller(const moes_context_options *given,
                             moes_context_options *out);

/* Whether size is that of moes_scatter_args in some version, and the
 * size it had in 0.1 and 0.2 (what the 0.2 entry point of its init
 * fills). */
int moes_scatter_args_size_known(size_t size);
size_t moes_scatter_args_size_0_2(void);

/* Checks info->struct_size; then moes_info_to_caller copies the first
 * struct_size bytes of full into info (the fields of later versions are
 * not written) and keeps the caller's struct_size. */
int moes_info_size_check(moes_context *ctx, const moes_context_info *info);
void moes_info_to_caller(moes_context_info *info,
                         const moes_context_info *full);

#endif /* MOES_STRUCT_SIZE_H */
