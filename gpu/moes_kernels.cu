/* SPDX-License-Identifier: MIT */
/*
 * moes_kernels.cu - the one translation unit nvcc turns into the embedded
 * fatbin: a fatbin holds one module, so the kernel files, one concern
 * each, are compiled together here.
 */
#include "route_count.cu"
#include "expert_scan.cu"
#include "error_record.cu"
#include "place_copy.cu"
#include "sort_route.cu"
#include "pad_labels.cu"
#include "place_and_label.cu"
#include "gather.cu"
#include "route_small.cu"
#include "distinct_experts.cu"
#include "scatter_small.cu"
#include "scatter_grid.cu"
#include "sort_grid.cu"
#include "fill_rows.cu"
