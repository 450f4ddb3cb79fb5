/* Vectorised exp for the row-wise softmax kernels (src/softmax_core.pxd): with scalar expf a
 * cross-entropy step at batch 64 x 10 classes spent ~2 us of its 3.7 in 640 expf calls, serially.
 * See src/simd.h for the vector types. */
#ifndef CNNCY_SOFTMAX_BLOCKS_H
#define CNNCY_SOFTMAX_BLOCKS_H

#include <math.h>

#define SIMD_TEMPLATE "softmax_blocks_impl.h"
#include "simd.h"
#undef SIMD_TEMPLATE

#endif
