/* The register-resident inner blocks of cnncy._fused (see src/fused.pyx for the data layout and
 * src/simd.h for why they are written with vector types). */
#ifndef CNNCY_FUSED_BLOCKS_H
#define CNNCY_FUSED_BLOCKS_H

#define CNNCY_CHANNEL_BLOCK 8  /* output channels per forward block: 8 independent FMA chains */
/* Output channels per 2x2-pool forward block (quad_block): 4 window positions x 4 channels = 16
 * accumulators; 8 (32 accumulators) spilled and was slower, 2 too (measured on SimpleCNN's layer). */
#define CNNCY_QUAD_CHANNELS 4
#define CNNCY_TAP_BLOCK 9      /* kernel taps per weight-gradient block: 9 FMA chains, 3x3 kernels exact */
/* Output channels per weight-gradient block: 2 x 9 accumulators and 9 input vectors fill AVX-512's 32
 * registers; each input load then feeds 2 multiply-adds (SimpleCNN's backward was load-bound). */
#define CNNCY_GRAD_CHANNELS 2

#define SIMD_TEMPLATE "fused_blocks_impl.h"
#include "simd.h"
#undef SIMD_TEMPLATE

#endif
