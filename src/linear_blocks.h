/* The register-resident inner blocks of cnncy._linear (see src/simd.h for why they are written with
 * vector types). */
#ifndef CNNCY_LINEAR_BLOCKS_H
#define CNNCY_LINEAR_BLOCKS_H

/* A dot-product tile: DOT_ROWS x DOT_COLS accumulators, DOT_ROWS + DOT_COLS loads per vector step.
 * 3 x 5 fits the registers and a 10-class head (two tiles of 5) exactly. */
#define CNNCY_DOT_ROWS 3
#define CNNCY_DOT_COLS 5

#define SIMD_TEMPLATE "linear_blocks_impl.h"
#include "simd.h"
#undef SIMD_TEMPLATE

#endif
