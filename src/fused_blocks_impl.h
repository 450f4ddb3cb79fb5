/* One element type's blocks for fused_blocks.h (REAL, MASK, NAME and the vector helpers come from
 * simd.h).  Do not include directly. */

/* acc[c] = bias[c] + the conv outputs of window position `pos` for the block's pooled columns, for
 * each output channel c of the block.  Tap k of the position is read at inputs + pos_taps[k] and
 * weighed with weight[k * CNNCY_CHANNEL_BLOCK + c]. */
static inline void NAME(conv_block)(const REAL* inputs, const ptrdiff_t* pos_taps, ptrdiff_t K,
                                    const REAL* weight, const REAL* bias, NAME(vec)* acc)
{
    for (int c = 0; c < CNNCY_CHANNEL_BLOCK; c++)
        acc[c] = NAME(splat)(bias[c]);
    for (ptrdiff_t k = 0; k < K; k++) {
        NAME(vec) x = NAME(load)(inputs + pos_taps[k]);
        for (int c = 0; c < CNNCY_CHANNEL_BLOCK; c++)
            acc[c] += weight[k * CNNCY_CHANNEL_BLOCK + c] * x;
    }
}

/* Pool one block: for each output channel c < channels of the block, out[c * out_stride + j] for
 * j < count is the maximum over the pool window of the conv outputs under pooled column j, after
 * ReLU if `relu`, and argmax[c * argmax_stride + j] (unless argmax is NULL; all lanes are written)
 * the window position that holds it, row-major.  Window position pos reads its taps at taps + pos * taps_stride (see
 * conv_block).  As in torch, ties keep the first maximum and a NaN always wins.  Under ReLU a
 * maximum <= 0 becomes 0 with position -1: no gradient flows there. */
static inline __attribute__((always_inline)) void NAME(window_max_block)(
        const REAL* inputs, const ptrdiff_t* taps, ptrdiff_t taps_stride, ptrdiff_t K, ptrdiff_t window, const REAL* weight,
                                          const REAL* bias, int relu, int channels, int count,
                                          REAL* out, ptrdiff_t out_stride, signed char* argmax,
                                          ptrdiff_t argmax_stride)
{
    NAME(vec) top[CNNCY_CHANNEL_BLOCK], acc[CNNCY_CHANNEL_BLOCK];
    NAME(mask) top_pos[CNNCY_CHANNEL_BLOCK];
    NAME(conv_block)(inputs, taps, K, weight, bias, top);
    for (int c = 0; c < CNNCY_CHANNEL_BLOCK; c++)
        top_pos[c] = (NAME(mask)){0};
    for (ptrdiff_t pos = 1; pos < window; pos++) {
        NAME(conv_block)(inputs, taps + pos * taps_stride, K, weight, bias, acc);
        for (int c = 0; c < CNNCY_CHANNEL_BLOCK; c++) {
            NAME(mask) take = (acc[c] > top[c]) | (acc[c] != acc[c]);
            top[c] = NAME(select)(take, acc[c], top[c]);
            top_pos[c] = (take & (MASK) pos) | (~take & top_pos[c]);
        }
    }
    for (int c = 0; c < channels; c++) {
        if (relu) {
            NAME(mask) passes = ~(top[c] <= 0);
            top[c] = NAME(select)(passes, top[c], NAME(splat)(0));
            top_pos[c] = (passes & top_pos[c]) | ~passes;  /* -1 where blocked */
        }
        NAME(store_first)(out + c * out_stride, top[c], count);
        if (argmax)
            NAME(store_int8)(argmax + c * argmax_stride, top_pos[c]);
    }
}

/* window_max_block for `rows` consecutive pooled rows: row r reads its inputs at inputs + r * input_row
 * and writes out + r * out_row and argmax + r * argmax_row. */
static inline __attribute__((always_inline)) void NAME(pool_rows)(
        const REAL* inputs, ptrdiff_t input_row, ptrdiff_t rows, const ptrdiff_t* taps, ptrdiff_t taps_stride,
        ptrdiff_t K, ptrdiff_t window, const REAL* weight, const REAL* bias, int relu, int channels, int count,
        REAL* out, ptrdiff_t out_row, ptrdiff_t out_stride, signed char* argmax, ptrdiff_t argmax_row,
        ptrdiff_t argmax_stride)
{
    for (ptrdiff_t r = 0; r < rows; r++)
        NAME(window_max_block)(inputs + r * input_row, taps, taps_stride, K, window, weight, bias, relu, channels,
                               count, out + r * out_row, out_stride, argmax ? argmax + r * argmax_row : NULL,
                               argmax_stride);
}

/* The largest |p[i]| for i < n, or +inf if any p[i] is NaN or infinite.  v * 0 is 0 for finite v
 * and NaN otherwise, so one multiply-add per vector finds those. */
static inline double NAME(max_abs)(const REAL* p, ptrdiff_t n)
{
    const ptrdiff_t lanes = CNNCY_BLOCK_BYTES / sizeof(REAL);
    NAME(vec) largest[2] = {NAME(splat)(0), NAME(splat)(0)};  /* two chains of dependent max */
    NAME(vec) not_finite = NAME(splat)(0);
    double result = 0;
    ptrdiff_t i = 0;
    for (; i + 2 * lanes <= n; i += 2 * lanes) {
        for (int h = 0; h < 2; h++) {
            NAME(vec) v = NAME(load)(p + i + h * lanes);
            largest[h] = NAME(max_later)(NAME(max_later)(v, -v), largest[h]);
            not_finite += v * NAME(splat)(0);
        }
    }
    for (; i < n; i++) {
        double magnitude = p[i] < 0 ? -(double) p[i] : (double) p[i];
        if (!(magnitude <= (double) MAX_REAL))  /* NaN or infinite */
            return __builtin_inf();
        if (magnitude > result)
            result = magnitude;
    }
    for (ptrdiff_t j = 0; j < lanes; j++) {
        if (not_finite[j] != 0)  /* NaN */
            return __builtin_inf();
        for (int h = 0; h < 2; h++)
            if (largest[h][j] > result)
                result = largest[h][j];
    }
    return result;
}

/* One padded image row dealt into its two phase planes (2-wide pools): even[j] = padded[2j] and
 * odd[j] = padded[2j + 1] for every j < width (a whole number of vectors), where padded[c] =
 * row[c - pad] for 0 <= c - pad < valid and 0 elsewhere.  With AVX-512, two masked loads and two
 * permutes per vector of each plane (a scalar stride-2 loop was 10% of SimpleCNN's forward). */
static inline void NAME(deal_row_pairs)(const REAL* row, ptrdiff_t pad, ptrdiff_t valid, REAL* even, REAL* odd,
                                        ptrdiff_t width)
{
    const ptrdiff_t lanes = CNNCY_BLOCK_BYTES / sizeof(REAL);
#ifdef DEAL_PAIRS
    for (ptrdiff_t j0 = 0; j0 < width; j0 += lanes) {
        ptrdiff_t start = 2 * j0 - pad;  /* row index of padded[2 * j0] */
        NAME(vec) low = LOAD_RANGE(row, start, valid), high = LOAD_RANGE(row, start + lanes, valid);
        DEAL_PAIRS(low, high, even + j0, odd + j0);
    }
#else
    for (ptrdiff_t j = 0; j < width; j++) {
        ptrdiff_t c = 2 * j - pad;
        even[j] = c >= 0 && c < valid ? row[c] : 0;
        odd[j] = c + 1 >= 0 && c + 1 < valid ? row[c + 1] : 0;
    }
#endif
}

/* window_max_block for 2x2 pools (window 4), with all four window positions of CNNCY_QUAD_CHANNELS
 * output channels in registers at once: each weight, broadcast once, feeds four multiply-adds (one
 * per position) instead of one, which halves the loads per multiply-add (window_max_block was
 * load-bound).  Each conv output is the same sum in the same order as in conv_block.
 *
 * The maximum is `later > top ? later : top` (one max instruction), which keeps the first of equal
 * values as torch does, signed zeros included, but drops a NaN that an earlier position held.  So
 * this block is exact only when no conv output is NaN; the caller checks that the inputs bound every
 * output to a finite value (finite_outputs in fused.pyx) and otherwise uses window_max_block.
 * `weight` holds the channels' weights for tap k at weight[k * weight_stride + c]. */
static inline __attribute__((always_inline)) void NAME(quad_block)(
        const REAL* inputs, const ptrdiff_t* taps, ptrdiff_t taps_stride, ptrdiff_t K, const REAL* weight,
        ptrdiff_t weight_stride, const REAL* bias, int relu, int channels, int count, REAL* out,
        ptrdiff_t out_stride, signed char* argmax, ptrdiff_t argmax_stride)
{
    NAME(vec) acc[4][CNNCY_QUAD_CHANNELS];
    for (int c = 0; c < CNNCY_QUAD_CHANNELS; c++) {
        NAME(vec) b = NAME(splat)(bias[c]);
        for (int pos = 0; pos < 4; pos++)
            acc[pos][c] = b;
    }
#pragma GCC unroll 9
    for (ptrdiff_t k = 0; k < K; k++) {
        NAME(vec) x[4];
        for (int pos = 0; pos < 4; pos++)
            x[pos] = NAME(load)(inputs + taps[pos * taps_stride + k]);
        for (int c = 0; c < CNNCY_QUAD_CHANNELS; c++) {
            NAME(vec) w = NAME(splat)(weight[k * weight_stride + c]);
            for (int pos = 0; pos < 4; pos++)
                acc[pos][c] += w * x[pos];
        }
    }
    for (int c = 0; c < channels; c++) {
        NAME(vec) top = acc[0][c];
        NAME(mask) top_pos = {0};
        for (int pos = 1; pos < 4; pos++) {
            if (argmax) {
                NAME(mask) take = acc[pos][c] > top;
                top_pos = (take & (MASK) pos) | (~take & top_pos);
            }
            top = NAME(max_later)(acc[pos][c], top);
        }
        if (relu) {
            NAME(mask) passes = top > 0;
            top = NAME(max_later)(top, NAME(splat)(0));  /* +0 where top <= 0 */
            if (argmax)
                top_pos = (passes & top_pos) | ~passes;  /* -1 where blocked */
        }
        NAME(store_first)(out + c * out_stride, top, count);
        if (argmax)
            NAME(store_int8)(argmax + c * argmax_stride, top_pos);
    }
}

/* pool_rows for 2x2 pools through quad_block, CNNCY_QUAD_CHANNELS channels of the channel block at a
 * time (the caller's weight is packed for CNNCY_CHANNEL_BLOCK channels per tap). */
static inline __attribute__((always_inline)) void NAME(quad_rows)(
        const REAL* inputs, ptrdiff_t input_row, ptrdiff_t rows, const ptrdiff_t* taps, ptrdiff_t taps_stride,
        ptrdiff_t K, const REAL* weight, const REAL* bias, int relu, int channels, int count, REAL* out,
        ptrdiff_t out_row, ptrdiff_t out_stride, signed char* argmax, ptrdiff_t argmax_row, ptrdiff_t argmax_stride)
{
    for (ptrdiff_t r = 0; r < rows; r++) {
        for (int c0 = 0; c0 < channels; c0 += CNNCY_QUAD_CHANNELS) {
            int block_channels = channels - c0 < CNNCY_QUAD_CHANNELS ? channels - c0 : CNNCY_QUAD_CHANNELS;
            if (argmax)  /* two copies: inference drops the position tracking at compile time */
                NAME(quad_block)(inputs + r * input_row, taps, taps_stride, K, weight + c0, CNNCY_CHANNEL_BLOCK,
                                 bias + c0, relu, block_channels, count, out + r * out_row + c0 * out_stride,
                                 out_stride, argmax + r * argmax_row + c0 * argmax_stride, argmax_stride);
            else
                NAME(quad_block)(inputs + r * input_row, taps, taps_stride, K, weight + c0, CNNCY_CHANNEL_BLOCK,
                                 bias + c0, relu, block_channels, count, out + r * out_row + c0 * out_stride,
                                 out_stride, NULL, argmax_stride);
        }
    }
}

/* pool_rows, with the common sizes as constants so that the compiler unrolls their loops: 2x2 pools
 * (window 4), and in them a one-channel 3x3 kernel (9 taps).  Measured on SimpleCNN's layer, batch
 * 64: 250 us generic, 235 us for window 4, 220 us for both.  finite_outputs (the caller's promise
 * that no conv output is NaN) lets 2x2 pools use quad_rows. */
static void NAME(window_max_rows)(const REAL* inputs, ptrdiff_t input_row, ptrdiff_t rows,
                                  const ptrdiff_t* taps, ptrdiff_t taps_stride, ptrdiff_t K, ptrdiff_t window,
                                  const REAL* weight, const REAL* bias, int relu, int channels, int count,
                                  REAL* out, ptrdiff_t out_row, ptrdiff_t out_stride, signed char* argmax,
                                  ptrdiff_t argmax_row, ptrdiff_t argmax_stride, int finite_outputs)
{
    if (finite_outputs && window == 4 && K == 9)
        NAME(quad_rows)(inputs, input_row, rows, taps, taps_stride, 9, weight, bias, relu, channels, count,
                        out, out_row, out_stride, argmax, argmax_row, argmax_stride);
    else if (finite_outputs && window == 4)
        NAME(quad_rows)(inputs, input_row, rows, taps, taps_stride, K, weight, bias, relu, channels, count,
                        out, out_row, out_stride, argmax, argmax_row, argmax_stride);
    else if (window == 4 && K == 9)
        NAME(pool_rows)(inputs, input_row, rows, taps, taps_stride, 9, 4, weight, bias, relu, channels, count,
                        out, out_row, out_stride, argmax, argmax_row, argmax_stride);
    else if (window == 4)
        NAME(pool_rows)(inputs, input_row, rows, taps, taps_stride, K, 4, weight, bias, relu, channels, count,
                        out, out_row, out_stride, argmax, argmax_row, argmax_stride);
    else
        NAME(pool_rows)(inputs, input_row, rows, taps, taps_stride, K, window, weight, bias, relu, channels,
                        count, out, out_row, out_stride, argmax, argmax_row, argmax_stride);
}

/* Spread the pooled gradient of one image-channel (rows x columns, row-major) onto the window
 * positions that won: for column block b of row r, spread[(r * blocks + b) * window + pos] (one
 * vector) is the gradient where the forward's argmax (rows of argmax_width) is pos, else 0; lanes
 * past the last column are 0.  bias_sum (one vector) accumulates the gradient that passed. */
static inline void NAME(spread_rows)(const REAL* grad, ptrdiff_t rows, ptrdiff_t columns,
                                     const signed char* argmax, ptrdiff_t argmax_width, ptrdiff_t window,
                                     REAL* spread, REAL* bias_sum)
{
    const ptrdiff_t lanes = CNNCY_BLOCK_BYTES / sizeof(REAL);
    const NAME(vec) zero = NAME(splat)(0);
    NAME(vec) passed = NAME(load)(bias_sum);
    for (ptrdiff_t r = 0; r < rows; r++) {
        for (ptrdiff_t column = 0; column < columns; column += lanes) {
            int count = columns - column < lanes ? (int) (columns - column) : (int) lanes;
            NAME(vec) g = NAME(load_first)(grad + r * columns + column, count);
            NAME(mask) won = NAME(load_int8)(argmax + r * argmax_width + column);
            for (ptrdiff_t pos = 0; pos < window; pos++)
                NAME(store)(spread + pos * lanes, NAME(select)(won == (MASK) pos, g, zero));
            passed += NAME(select)(won >= 0, g, zero);
            spread += window * lanes;
        }
    }
    NAME(store)(bias_sum, passed);
}

/* The weight gradient of CNNCY_TAP_BLOCK taps of CNNCY_GRAD_CHANNELS output channels: for channel c,
 * total[c * total_stride + t] = the sum over blocks of sum over window positions pos of
 * spread_c[pos] * (tap t of pos), lane by lane, then across the lanes in a fixed order.  Block i reads
 * its inputs at inputs[i], channel c's spread at spread + c * channel_stride + i * window * lanes, and
 * tap t of window position pos at inputs[i] + taps[pos * taps_stride + t].  The channels share each
 * load of the inputs (one load per tap feeds CNNCY_GRAD_CHANNELS multiply-adds).  Only the first
 * `channels` are stored; the others must still be readable spread (any channel's will do).
 *
 * The lanes of a row's last block past its pooled columns have a zero spread, but their inputs are
 * real ones (columns that other lanes read through other taps), so with an infinite or NaN input
 * they add NaN.  With `last_lanes` > 0 (the caller found such inputs) those lanes are left out:
 * every `row_blocks`-th block (the last of a row) adds only its first last_lanes lanes. */
static inline __attribute__((always_inline)) void NAME(spread_dot_body)(
        const REAL* const* inputs, ptrdiff_t blocks, const ptrdiff_t* taps, ptrdiff_t taps_stride,
        ptrdiff_t window, const REAL* spread, ptrdiff_t channel_stride, int channels, REAL* total,
        ptrdiff_t total_stride, ptrdiff_t row_blocks, int last_lanes)
{
    const ptrdiff_t lanes = CNNCY_BLOCK_BYTES / sizeof(REAL);
    NAME(vec) sum[CNNCY_GRAD_CHANNELS][CNNCY_TAP_BLOCK];
    ptrdiff_t offset[CNNCY_TAP_BLOCK];
    NAME(mask) last_block_lanes;
    for (ptrdiff_t j = 0; j < lanes; j++)
        last_block_lanes[j] = j < last_lanes ? -1 : 0;
    for (int c = 0; c < CNNCY_GRAD_CHANNELS; c++)
        for (int t = 0; t < CNNCY_TAP_BLOCK; t++)
            sum[c][t] = NAME(splat)(0);
    /* Window positions outermost, so that the tap offsets stay in registers; every sum[c][t] adds
     * its products in the same order as with one channel at a time. */
    for (ptrdiff_t pos = 0; pos < window; pos++) {
        for (int t = 0; t < CNNCY_TAP_BLOCK; t++)
            offset[t] = taps[pos * taps_stride + t];
        for (ptrdiff_t i = 0; i < blocks; i++) {
            const REAL* block_inputs = inputs[i];
            NAME(vec) x[CNNCY_TAP_BLOCK];
            for (int t = 0; t < CNNCY_TAP_BLOCK; t++)
                x[t] = NAME(load)(block_inputs + offset[t]);
            int masked = last_lanes > 0 && i % row_blocks == row_blocks - 1;
            for (int c = 0; c < CNNCY_GRAD_CHANNELS; c++) {
                NAME(vec) g = NAME(load)(spread + c * channel_stride + (i * window + pos) * lanes);
                for (int t = 0; t < CNNCY_TAP_BLOCK; t++) {
                    if (masked)
                        sum[c][t] = NAME(select)(last_block_lanes, sum[c][t] + g * x[t], sum[c][t]);
                    else
                        sum[c][t] += g * x[t];
                }
            }
        }
    }
    for (int c = 0; c < channels; c++)
        for (int t = 0; t < CNNCY_TAP_BLOCK; t++)
            total[c * total_stride + t] = NAME(lane_sum)(sum[c][t]);
}

static inline void NAME(spread_dot)(const REAL* const* inputs, ptrdiff_t blocks, const ptrdiff_t* taps,
                                    ptrdiff_t taps_stride, ptrdiff_t window, const REAL* spread,
                                    ptrdiff_t channel_stride, int channels, REAL* total, ptrdiff_t total_stride,
                                    ptrdiff_t row_blocks, int last_lanes)
{
    if (last_lanes > 0)  /* rare: a separate copy keeps the usual loop free of the test */
        NAME(spread_dot_body)(inputs, blocks, taps, taps_stride, window, spread, channel_stride, channels, total,
                              total_stride, row_blocks, last_lanes);
    else
        NAME(spread_dot_body)(inputs, blocks, taps, taps_stride, window, spread, channel_stride, channels, total,
                              total_stride, 1, 0);
}

/* The input gradient of one block, by running the convolution backwards: for each window position
 * pos and tap k, the vector at grad_inputs + taps[pos * taps_stride + k] gains the sum over output
 * channels o of weight_t[k * channels + o] * spread[o * channel_stride + pos * lanes] (weight_t: the
 * weight transposed to [taps_stride][channels], zero for padding taps). */
static inline void NAME(input_grad_block)(REAL* grad_inputs, const ptrdiff_t* taps, ptrdiff_t taps_stride,
                                          ptrdiff_t window, const REAL* weight_t, ptrdiff_t channels,
                                          const REAL* spread, ptrdiff_t channel_stride)
{
    const ptrdiff_t lanes = CNNCY_BLOCK_BYTES / sizeof(REAL);
    for (ptrdiff_t pos = 0; pos < window; pos++) {
        for (ptrdiff_t k0 = 0; k0 < taps_stride; k0 += CNNCY_TAP_BLOCK) {
            NAME(vec) sum[CNNCY_TAP_BLOCK];
            for (int t = 0; t < CNNCY_TAP_BLOCK; t++)
                sum[t] = NAME(splat)(0);
            for (ptrdiff_t o = 0; o < channels; o++) {
                NAME(vec) g = NAME(load)(spread + o * channel_stride + pos * lanes);
                for (int t = 0; t < CNNCY_TAP_BLOCK; t++)
                    sum[t] += weight_t[(k0 + t) * channels + o] * g;
            }
            for (int t = 0; t < CNNCY_TAP_BLOCK; t++) {
                REAL* target = grad_inputs + taps[pos * taps_stride + k0 + t];
                NAME(store)(target, NAME(load)(target) + sum[t]);
            }
        }
    }
}
