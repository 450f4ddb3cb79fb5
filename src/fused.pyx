"""Fused conv2d + bias (+ ReLU) + max_pool2d, the hot path of small CNNs.

Covers a stride-1, dilation-1, groups-1 convolution (any padding, any channel
counts) followed by an optional ReLU and a max-pool whose kernel equals its
stride (no pool padding, no ceil_mode).  The conv output is never stored: each
pooled value is the maximum over its window of conv outputs computed in
registers, and the forward records which window position won (`argmax`, or -1
where ReLU clamped the winner to zero, so that no gradient flows).  The argmax
rows are padded to whole vector blocks (see `argmax_shape`).

Vectorisation runs along the pooled output's columns.  Each image is first
rewritten into "phase planes": the zero-padded input with its columns dealt out
by their remainder modulo the pool width,

    planes[c][r][q][j] = padded_input[c][r][pool_w * j + q],

so that for a fixed window position and kernel tap, the inputs under a block of
consecutive pooled columns are consecutive in memory.  `taps[pos][k]` is where
tap k of window position pos reads, relative to the block's first input.  The
register blocks themselves (one vector of pooled columns for a few output
channels, or for a few taps) are in fused_blocks.h.

Backward: the upstream gradient of each pooled value goes to the winning
position of its window only.  Per output channel it is spread into one vector
per window position (zero where another position won) and contracted with the
same phase planes to give the weight gradient.  The batch is cut into chunks
whose size depends on the batch size alone; each chunk sums into its own
buffer and the buffers are added in chunk order, so the result does not depend
on the thread count.  The input gradient (when wanted) is the transposed
convolution of the spread gradient, per image.
"""
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.float cimport DBL_MAX, FLT_MAX
from libc.math cimport INFINITY, fabs
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from arrays cimport (array_arg, data, dim, float64_call, numpy_type, optional_arg, same_shape, shape_error,
                    shape_of)

cnp.import_array()

cdef extern from "fused_blocks.h":
    enum:
        BLOCK_BYTES "CNNCY_BLOCK_BYTES"
        CHANNEL_BLOCK "CNNCY_CHANNEL_BLOCK"
        TAP_BLOCK "CNNCY_TAP_BLOCK"
        GRAD_CHANNELS "CNNCY_GRAD_CHANNELS"
    void window_max_rows_f32(const float* inputs, Py_ssize_t input_row, Py_ssize_t rows, const Py_ssize_t* taps,
                             Py_ssize_t taps_stride, Py_ssize_t K, Py_ssize_t window, const float* weight,
                             const float* bias, int relu, int channels, int count, float* out, Py_ssize_t out_row,
                             Py_ssize_t out_stride, signed char* argmax, Py_ssize_t argmax_row,
                             Py_ssize_t argmax_stride, int finite_outputs) noexcept nogil
    void window_max_rows_f64(const double* inputs, Py_ssize_t input_row, Py_ssize_t rows, const Py_ssize_t* taps,
                             Py_ssize_t taps_stride, Py_ssize_t K, Py_ssize_t window, const double* weight,
                             const double* bias, int relu, int channels, int count, double* out, Py_ssize_t out_row,
                             Py_ssize_t out_stride, signed char* argmax, Py_ssize_t argmax_row,
                             Py_ssize_t argmax_stride, int finite_outputs) noexcept nogil
    double max_abs_f32(const float* p, Py_ssize_t n) noexcept nogil
    double max_abs_f64(const double* p, Py_ssize_t n) noexcept nogil
    void deal_row_pairs_f32(const float* row, Py_ssize_t pad, Py_ssize_t valid, float* even, float* odd,
                            Py_ssize_t width) noexcept nogil
    void deal_row_pairs_f64(const double* row, Py_ssize_t pad, Py_ssize_t valid, double* even, double* odd,
                            Py_ssize_t width) noexcept nogil
    void spread_rows_f32(const float* grad, Py_ssize_t rows, Py_ssize_t columns, const signed char* argmax,
                         Py_ssize_t argmax_width, Py_ssize_t window, float* spread, float* bias_sum) noexcept nogil
    void spread_rows_f64(const double* grad, Py_ssize_t rows, Py_ssize_t columns, const signed char* argmax,
                         Py_ssize_t argmax_width, Py_ssize_t window, double* spread, double* bias_sum) noexcept nogil
    void spread_dot_f32(const float* const* inputs, Py_ssize_t blocks, const Py_ssize_t* taps,
                        Py_ssize_t taps_stride, Py_ssize_t window, const float* spread, Py_ssize_t channel_stride,
                        int channels, float* total, Py_ssize_t total_stride, Py_ssize_t row_blocks,
                        int last_lanes) noexcept nogil
    void spread_dot_f64(const double* const* inputs, Py_ssize_t blocks, const Py_ssize_t* taps,
                        Py_ssize_t taps_stride, Py_ssize_t window, const double* spread, Py_ssize_t channel_stride,
                        int channels, double* total, Py_ssize_t total_stride, Py_ssize_t row_blocks,
                        int last_lanes) noexcept nogil
    void input_grad_block_f32(float* grad_inputs, const Py_ssize_t* taps, Py_ssize_t taps_stride, Py_ssize_t window,
                              const float* weight_t, Py_ssize_t channels, const float* spread,
                              Py_ssize_t channel_stride) noexcept nogil
    void input_grad_block_f64(double* grad_inputs, const Py_ssize_t* taps, Py_ssize_t taps_stride, Py_ssize_t window,
                              const double* weight_t, Py_ssize_t channels, const double* spread,
                              Py_ssize_t channel_stride) noexcept nogil

cdef enum:
    MAX_LANES = 16       # BLOCK_BYTES // sizeof(float32): the most pooled columns in one block
    MAX_WINDOW = 127     # pool windows up to this size: the argmax fits in int8

# Below this many multiply-adds (about 2 us of work) one thread is faster.  With the team awake
# between the regions of a step (cnncy._openmp_env) a region costs about 1 us; a sleeping worker
# takes ~30 us to wake.  SimpleCNN at batch 1 (0.23 M) splits by channel blocks.
cdef Py_ssize_t PARALLEL_MIN_WORK = 1 << 17
# The weight/bias gradient sums over at most this many batch chunks.
cdef Py_ssize_t MAX_BATCH_CHUNKS = 16


def max_window():
    """The largest pool window (kernel_h * kernel_w) the fused kernels accept."""
    return MAX_WINDOW


def argmax_shape(out_shape, itemsize):
    """The shape of the forward's argmax for a pooled output of out_shape: rows padded to whole blocks."""
    lanes = BLOCK_BYTES // itemsize
    n, channels, rows, columns = out_shape
    return (n, channels, rows, (columns + lanes - 1) // lanes * lanes)


cdef struct Plan:
    Py_ssize_t C, H, W, O, KH, KW, pad_h, pad_w, pool_h, pool_w, PH, PW
    Py_ssize_t K            # C * KH * KW: taps per output channel
    Py_ssize_t K_padded     # K rounded up to TAP_BLOCK: the row length of the tap table
    Py_ssize_t window       # pool_h * pool_w
    Py_ssize_t lanes        # pooled columns per block (one vector)
    Py_ssize_t blocks       # column blocks per pooled row
    Py_ssize_t argmax_width # blocks * lanes: the length of an argmax row
    Py_ssize_t rows         # padded input rows the pooled outputs read
    Py_ssize_t plane_width  # columns of one phase plane
    Py_ssize_t plane_size   # one image's phase planes, in elements


cdef Plan make_plan(Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t O, Py_ssize_t KH,
                    Py_ssize_t KW, Py_ssize_t pad_h, Py_ssize_t pad_w, Py_ssize_t pool_h,
                    Py_ssize_t pool_w, Py_ssize_t PH, Py_ssize_t PW, Py_ssize_t lanes) noexcept nogil:
    cdef Plan p
    p.C, p.H, p.W, p.O, p.KH, p.KW = C, H, W, O, KH, KW
    p.pad_h, p.pad_w, p.pool_h, p.pool_w, p.PH, p.PW = pad_h, pad_w, pool_h, pool_w, PH, PW
    p.K = C * KH * KW
    p.K_padded = (p.K + TAP_BLOCK - 1) // TAP_BLOCK * TAP_BLOCK
    p.window = pool_h * pool_w
    p.lanes = lanes
    p.blocks = (PW + lanes - 1) // lanes
    p.argmax_width = p.blocks * lanes
    p.rows = pool_h * PH + KH - 1
    # A block's last lane reads up to (pool_w - 1 + KW - 1) // pool_w columns past the block.  Whole
    # vectors per plane row keep the taps that read a block's own columns aligned (no split loads).
    p.plane_width = (p.blocks * lanes + (pool_w + KW - 2) // pool_w + lanes - 1) // lanes * lanes
    p.plane_size = C * p.rows * pool_w * p.plane_width
    return p


cdef Plan plan_for(floating kind, cnp.ndarray x, cnp.ndarray weight, cnp.ndarray bias, cnp.ndarray out,
                   cnp.ndarray argmax, int pad_h, int pad_w, int pool_h, int pool_w, str op):
    """The plan of a call, after checking that its shapes are consistent (the kernels trust them).
    out: the pooled output (or its gradient); bias and argmax may be None."""
    cdef Py_ssize_t OH = dim(x, 2) + 2 * pad_h - dim(weight, 2) + 1
    cdef Py_ssize_t OW = dim(x, 3) + 2 * pad_w - dim(weight, 3) + 1
    cdef Plan p = make_plan(dim(x, 1), dim(x, 2), dim(x, 3), dim(weight, 0), dim(weight, 2), dim(weight, 3),
                            pad_h, pad_w, pool_h, pool_w, dim(out, 2), dim(out, 3), BLOCK_BYTES // sizeof(floating))
    if (dim(weight, 1) != dim(x, 1) or dim(out, 0) != dim(x, 0) or dim(out, 1) != dim(weight, 0)
            or (bias is not None and dim(bias, 0) != p.O)
            or pad_h < 0 or pad_w < 0 or pool_h < 1 or pool_w < 1 or pool_h * pool_w > MAX_WINDOW
            or p.PH * pool_h > OH or p.PW * pool_w > OW or dim(weight, 2) < 1 or dim(weight, 3) < 1
            or (argmax is not None and (dim(argmax, 0) != dim(out, 0) or dim(argmax, 1) != p.O
                                        or dim(argmax, 2) != p.PH or dim(argmax, 3) != p.argmax_width))):
        raise ValueError(f"{op}: inconsistent shapes: input {shape_of(x)}, weight {shape_of(weight)}, bias "
                         f"{shape_of(bias)}, pooled {shape_of(out)}, argmax {shape_of(argmax)}, padding "
                         f"{(pad_h, pad_w)}, pool {(pool_h, pool_w)}")
    return p


cdef void fill_taps(const Plan* p, Py_ssize_t* taps) noexcept nogil:
    """taps[pos * K_padded + k]: where tap k of window position pos reads, relative to the block start.

    Padding entries (k >= K) point at the block start, a valid address whose product is discarded."""
    cdef Py_ssize_t pos, dy, q, c, kh, kw, k, column
    for pos in range(p.window):
        dy = pos // p.pool_w
        q = pos % p.pool_w
        k = 0
        for c in range(p.C):
            for kh in range(p.KH):
                for kw in range(p.KW):
                    column = q + kw
                    taps[pos * p.K_padded + k] = (((c * p.rows + dy + kh) * p.pool_w + column % p.pool_w)
                                                  * p.plane_width + column // p.pool_w)
                    k += 1
        for k in range(p.K, p.K_padded):
            taps[pos * p.K_padded + k] = 0


cdef void copy_planes(floating* image, floating* planes, const Plan* p, bint into_planes) noexcept nogil:
    """Between an image and its phase planes, planes[c][r][q][j] = zero-padded image[c][r][pool_w * j + q].

    into_planes: fill the planes from the image (for 2-wide pools whole plane rows, in vectors: the
    scalar stride-2 copy was 8% of SimpleCNN's forward).  Otherwise write the image from the planes
    (an input gradient); the rows and columns that no pooled output reads get 0."""
    cdef Py_ssize_t c, r, q, j, iy
    cdef Py_ssize_t columns = min(p.W + p.pad_w, p.pool_w * p.PW + p.KW - 1)  # padded columns read, past the left pad
    # Padded column pool_w * j + q lies inside the image for j_first[q] <= j < j_end[q] (the same in
    # every row: computed once, the rows are short).
    cdef Py_ssize_t j_first[MAX_WINDOW]
    cdef Py_ssize_t j_end[MAX_WINDOW]
    cdef floating* plane
    cdef floating* image_row
    if into_planes and p.pool_w == 2:  # the usual pool: whole plane rows in vectors
        for c in range(p.C):
            for r in range(p.rows):
                plane = planes + (c * p.rows + r) * 2 * p.plane_width
                iy = r - p.pad_h
                if iy < 0 or iy >= p.H:
                    memset(plane, 0, 2 * p.plane_width * sizeof(floating))
                elif floating is float:
                    deal_row_pairs_f32(image + (c * p.H + iy) * p.W, p.pad_w, columns - p.pad_w, plane,
                                       plane + p.plane_width, p.plane_width)
                else:
                    deal_row_pairs_f64(image + (c * p.H + iy) * p.W, p.pad_w, columns - p.pad_w, plane,
                                       plane + p.plane_width, p.plane_width)
        return
    for q in range(p.pool_w):
        j_first[q] = (p.pad_w - q + p.pool_w - 1) // p.pool_w if p.pad_w > q else 0
        j_end[q] = (columns - q + p.pool_w - 1) // p.pool_w if columns > q else 0
    if into_planes:
        memset(planes, 0, p.plane_size * sizeof(floating))
    else:
        memset(image, 0, p.C * p.H * p.W * sizeof(floating))
    for c in range(p.C):
        for r in range(p.rows):
            iy = r - p.pad_h
            if iy < 0 or iy >= p.H:
                continue
            image_row = image + (c * p.H + iy) * p.W - p.pad_w  # indexed by padded column
            for q in range(p.pool_w):
                plane = planes + ((c * p.rows + r) * p.pool_w + q) * p.plane_width
                if into_planes:
                    for j in range(j_first[q], j_end[q]):
                        plane[j] = image_row[p.pool_w * j + q]
                else:
                    for j in range(j_first[q], j_end[q]):
                        image_row[p.pool_w * j + q] = plane[j]


cdef inline floating* block_start(floating* planes, const Plan* p, Py_ssize_t py, Py_ssize_t b) noexcept nogil:
    """Where the inputs of pooled row py, column block b start in an image's phase planes."""
    return planes + py * p.pool_h * p.pool_w * p.plane_width + b * p.lanes


cdef inline void* align_block(void* memory) noexcept nogil:
    """The first BLOCK_BYTES-aligned address in memory (allocated with BLOCK_BYTES to spare)."""
    return <void*> ((<size_t> memory + BLOCK_BYTES - 1) // BLOCK_BYTES * BLOCK_BYTES)


cdef int choose_threads(Py_ssize_t work, Py_ssize_t parallel_items, int num_threads) noexcept nogil:
    if work < PARALLEL_MIN_WORK:
        return 1
    return <int> min(<Py_ssize_t> num_threads, parallel_items)


cdef floating lane_total(const floating* lanes, Py_ssize_t count) noexcept nogil:
    cdef floating total = 0
    cdef Py_ssize_t j
    for j in range(count):
        total += lanes[j]
    return total


# ----------------------------------------------------------------------------- forward

cdef void pack_weights(const floating* weight, const floating* bias, const Plan* p,
                       floating* packed_weight, floating* packed_bias) noexcept nogil:
    """packed_weight[o // CHANNEL_BLOCK][k][o % CHANNEL_BLOCK]: a channel block's weights per tap side by side.

    Channels past O (when O is not a multiple of CHANNEL_BLOCK) get zero weights and are never stored."""
    cdef Py_ssize_t channel_blocks = (p.O + CHANNEL_BLOCK - 1) // CHANNEL_BLOCK
    cdef Py_ssize_t o, k
    memset(packed_weight, 0, channel_blocks * CHANNEL_BLOCK * p.K * sizeof(floating))
    memset(packed_bias, 0, channel_blocks * CHANNEL_BLOCK * sizeof(floating))
    for o in range(p.O):
        for k in range(p.K):
            packed_weight[((o // CHANNEL_BLOCK) * p.K + k) * CHANNEL_BLOCK + o % CHANNEL_BLOCK] = weight[o * p.K + k]
        if bias != NULL:
            packed_bias[o] = bias[o]


cdef void output_bounds(const floating* weight, const floating* bias, const Plan* p,
                        double* weight_bound, double* bias_bound) noexcept nogil:
    """weight_bound: the largest sum of |weight| over one output channel's taps; bias_bound: the largest
    |bias|.  Infinite if any weight or bias is NaN or infinite.

    Every conv output of an input whose entries are at most M in magnitude is then at most
    M * weight_bound + bias_bound (and so is every partial sum on the way to it)."""
    cdef Py_ssize_t o, k
    cdef double total
    weight_bound[0] = 0
    bias_bound[0] = 0
    for o in range(p.O):
        total = 0
        for k in range(p.K):
            total += fabs(weight[o * p.K + k])
        weight_bound[0] = max(weight_bound[0], total if total == total else INFINITY)
        if bias != NULL:
            total = fabs(bias[o])
            bias_bound[0] = max(bias_bound[0], total if total == total else INFINITY)


cdef double largest_magnitude(const floating* x, Py_ssize_t images, const Plan* p) noexcept nogil:
    """The largest |value| of `images` consecutive images; infinite if any value is NaN or infinite."""
    if floating is float:
        return max_abs_f32(x, images * p.C * p.H * p.W)
    return max_abs_f64(x, images * p.C * p.H * p.W)


cdef bint finite_outputs(const floating* image, const Plan* p, double weight_bound, double bias_bound) noexcept nogil:
    """Whether no conv output of `image` can be NaN or infinite.

    The 2x2 blocks take their maximum with the max instruction, which can drop a NaN; they run only
    where this holds.  NaN or infinite inputs, weights or biases fail it (an infinite bound), and so do
    magnitudes large enough that a sum could overflow: the bound is kept below half the largest
    finite value, far more than rounding can add."""
    cdef double limit = FLT_MAX / 2 if floating is float else DBL_MAX / 2
    return largest_magnitude(image, 1, p) * weight_bound + bias_bound < limit


cdef void forward_channel_block(const floating* planes, const Py_ssize_t* taps, const floating* packed_weight,
                                const floating* packed_bias, const Plan* p, Py_ssize_t cb, floating* out,
                                signed char* argmax, bint relu, bint finite_outputs) noexcept nogil:
    """Channel block cb (CHANNEL_BLOCK output channels) of one image, from its phase planes.

    finite_outputs: no conv output can be NaN (see finite_outputs), which allows the faster blocks."""
    cdef Py_ssize_t b, row = cb * CHANNEL_BLOCK * p.PH
    for b in range(p.blocks):
        if floating is float:
            window_max_rows_f32(block_start(<floating*> planes, p, 0, b), p.pool_h * p.pool_w * p.plane_width,
                                p.PH, taps, p.K_padded, p.K, p.window, packed_weight + cb * p.K * CHANNEL_BLOCK,
                                packed_bias + cb * CHANNEL_BLOCK, relu, min(CHANNEL_BLOCK, p.O - cb * CHANNEL_BLOCK),
                                min(p.lanes, p.PW - b * p.lanes), out + row * p.PW + b * p.lanes, p.PW, p.PH * p.PW,
                                argmax + row * p.argmax_width + b * p.lanes if argmax != NULL else NULL,
                                p.argmax_width, p.PH * p.argmax_width, finite_outputs)
        else:
            window_max_rows_f64(block_start(<floating*> planes, p, 0, b), p.pool_h * p.pool_w * p.plane_width,
                                p.PH, taps, p.K_padded, p.K, p.window, packed_weight + cb * p.K * CHANNEL_BLOCK,
                                packed_bias + cb * CHANNEL_BLOCK, relu, min(CHANNEL_BLOCK, p.O - cb * CHANNEL_BLOCK),
                                min(p.lanes, p.PW - b * p.lanes), out + row * p.PW + b * p.lanes, p.PW, p.PH * p.PW,
                                argmax + row * p.argmax_width + b * p.lanes if argmax != NULL else NULL,
                                p.argmax_width, p.PH * p.argmax_width, finite_outputs)


cdef int forward_items(const floating* x, Py_ssize_t first, Py_ssize_t end, const Py_ssize_t* taps,
                       const floating* packed_weight, const floating* packed_bias, const Plan* p,
                       double weight_bound, double bias_bound, floating* out, signed char* argmax,
                       bint relu) noexcept nogil:
    """The fused forward of work items first..end-1, item = image * channel_blocks + channel block,
    through phase planes of their own (made once per image); 1 if out of memory.

    Items rather than images, so that a batch smaller than the team still splits (by channel blocks)."""
    cdef Py_ssize_t image_size = p.C * p.H * p.W
    cdef Py_ssize_t out_image = p.O * p.PH * p.PW
    cdef Py_ssize_t argmax_image = p.O * p.PH * p.argmax_width
    cdef Py_ssize_t channel_blocks = (p.O + CHANNEL_BLOCK - 1) // CHANNEL_BLOCK
    cdef void* planes_memory = malloc(p.plane_size * sizeof(floating) + BLOCK_BYTES)
    cdef floating* planes = <floating*> align_block(planes_memory)
    cdef Py_ssize_t item, n, planes_of = -1
    cdef bint finite = False
    if planes_memory == NULL:
        return 1
    for item in range(first, end):
        n = item // channel_blocks
        if n != planes_of:
            copy_planes(<floating*> x + n * image_size, planes, p, True)
            finite = finite_outputs(x + n * image_size, p, weight_bound, bias_bound)
            planes_of = n
        forward_channel_block(planes, taps, packed_weight, packed_bias, p, item % channel_blocks,
                              out + n * out_image, argmax + n * argmax_image if argmax != NULL else NULL, relu,
                              finite)
    free(planes_memory)
    return 0


def conv_relu_pool_forward(x, weight, bias, out, argmax, int pad_h, int pad_w, int pool_h, int pool_w, bint relu,
                           int num_threads):
    """out = max_pool2d(relu(conv2d(x, weight, bias, padding=(pad_h, pad_w))), (pool_h, pool_w)).

    x [N, C, H, W], weight [O, C, KH, KW], bias [O] or None, out [N, O, PH, PW].  relu=False skips
    the ReLU.  argmax (int8, shaped argmax_shape(out.shape, itemsize)) receives each window's
    winning position (row-major within the window), -1 where ReLU blocks the gradient; pass None
    for inference."""
    if float64_call(x, "conv_relu_pool_forward"):
        forward_as(<double> 0, x, weight, bias, out, argmax, pad_h, pad_w, pool_h, pool_w, relu, num_threads)
    else:
        forward_as(<float> 0, x, weight, bias, out, argmax, pad_h, pad_w, pool_h, pool_w, relu, num_threads)


cdef forward_as(floating kind, x_array, weight_array, bias_array, out_array, argmax_array, int pad_h, int pad_w,
                int pool_h, int pool_w, bint relu, int num_threads):
    cdef int typenum = numpy_type(kind)
    cdef str op = "conv_relu_pool_forward"
    cdef cnp.ndarray xa = array_arg(x_array, typenum, 4, False, op, "x")
    cdef cnp.ndarray wa = array_arg(weight_array, typenum, 4, False, op, "weight")
    cdef cnp.ndarray ba = optional_arg(bias_array, typenum, 1, False, op, "bias")
    cdef cnp.ndarray oa = array_arg(out_array, typenum, 4, True, op, "out")
    cdef cnp.ndarray aa = optional_arg(argmax_array, cnp.NPY_INT8, 4, True, op, "argmax")
    cdef Plan p = plan_for(kind, xa, wa, ba, oa, aa, pad_h, pad_w, pool_h, pool_w, op)
    cdef const floating* x = <const floating*> data(xa)
    cdef const floating* weight = <const floating*> data(wa)
    cdef const floating* bias_data = <const floating*> data(ba)
    cdef floating* out = <floating*> data(oa)
    cdef signed char* argmax_data = <signed char*> data(aa)
    cdef Py_ssize_t N = dim(xa, 0), part
    cdef Py_ssize_t channel_blocks = (p.O + CHANNEL_BLOCK - 1) // CHANNEL_BLOCK
    cdef Py_ssize_t items = N * channel_blocks
    cdef int threads = choose_threads(N * p.O * p.K * p.PH * p.PW * p.window, items, num_threads)
    cdef Py_ssize_t* taps
    cdef floating* packed_weight
    cdef floating* packed_bias
    cdef int failed = 0
    cdef int* failed_flag = &failed
    cdef double weight_bound, bias_bound
    if N == 0 or p.O * p.PH * p.PW == 0:
        return
    taps = <Py_ssize_t*> malloc(p.window * p.K_padded * sizeof(Py_ssize_t))
    packed_weight = <floating*> malloc(channel_blocks * CHANNEL_BLOCK * p.K * sizeof(floating))
    packed_bias = <floating*> malloc(channel_blocks * CHANNEL_BLOCK * sizeof(floating))
    if taps == NULL or packed_weight == NULL or packed_bias == NULL:
        failed = 1
    else:
        fill_taps(&p, taps)
        pack_weights(weight, bias_data, &p, packed_weight, packed_bias)
        output_bounds(weight, bias_data, &p, &weight_bound, &bias_bound)
        if threads == 1:  # no parallel region for small work
            with nogil:
                failed = forward_items(x, 0, items, taps, packed_weight, packed_bias, &p, weight_bound, bias_bound,
                                       out, argmax_data, relu)
        else:
            for part in prange(threads, nogil=True, schedule="static", num_threads=threads):
                if forward_items(x, part * items // threads, (part + 1) * items // threads, taps, packed_weight,
                                 packed_bias, &p, weight_bound, bias_bound, out, argmax_data, relu):
                    failed_flag[0] = 1
    free(taps)
    free(packed_weight)
    free(packed_bias)
    if failed:
        raise MemoryError("conv_relu_pool_forward: out of memory for the scratch buffers")


# ----------------------------------------------------------------------------- backward

cdef inline void spread_channel(const floating* grad_out, const signed char* argmax, const Plan* p,
                                floating* spread, floating* bias_sum) noexcept nogil:
    """Spread one image-channel's pooled gradient over its window positions (see spread_rows)."""
    if floating is float:
        spread_rows_f32(grad_out, p.PH, p.PW, argmax, p.argmax_width, p.window, spread, bias_sum)
    else:
        spread_rows_f64(grad_out, p.PH, p.PW, argmax, p.argmax_width, p.window, spread, bias_sum)


cdef void weight_grad_channels(const floating* const* block_inputs, Py_ssize_t blocks, const floating* spread,
                               Py_ssize_t channel_stride, int channels, const Py_ssize_t* taps, const Plan* p,
                               bint finite_inputs, floating* grad_weight) noexcept nogil:
    """grad_weight[c * K + k] = the sum over `blocks` column blocks of channel c's spread * tap k, for
    `channels` <= GRAD_CHANNELS output channels (channel c's spread at spread + c * channel_stride).

    Unless finite_inputs, the lanes past each row's pooled columns are left out (see spread_dot)."""
    cdef floating total[GRAD_CHANNELS * TAP_BLOCK]
    cdef Py_ssize_t kb, k0, t
    cdef int c
    cdef int last_lanes = 0 if finite_inputs else <int> (p.PW - (p.blocks - 1) * p.lanes)
    # The block always reads GRAD_CHANNELS channels' spread: past the last channel it rereads channel 0's.
    if channels < GRAD_CHANNELS:
        channel_stride = 0
    if last_lanes == p.lanes:  # whole blocks: no lanes past the columns
        last_lanes = 0
    for kb in range(p.K_padded // TAP_BLOCK):
        k0 = kb * TAP_BLOCK
        if floating is float:
            spread_dot_f32(block_inputs, blocks, taps + k0, p.K_padded, p.window, spread, channel_stride,
                           channels, total, TAP_BLOCK, p.blocks, last_lanes)
        else:
            spread_dot_f64(block_inputs, blocks, taps + k0, p.K_padded, p.window, spread, channel_stride,
                           channels, total, TAP_BLOCK, p.blocks, last_lanes)
        for c in range(channels):
            for t in range(min(<Py_ssize_t> TAP_BLOCK, p.K - k0)):
                grad_weight[c * p.K + k0 + t] = total[c * TAP_BLOCK + t]


cdef void input_grad_image(const floating* spread, Py_ssize_t channel_stride, const Py_ssize_t* taps,
                           const floating* weight_t, const Plan* p, floating* grad_planes,
                           floating* grad_x) noexcept nogil:
    """grad_x of one image from its spread gradient (channel o's at spread + o * channel_stride).

    The gradient collects in grad_planes, laid out like the image's phase planes."""
    cdef Py_ssize_t py, b, at
    memset(grad_planes, 0, p.plane_size * sizeof(floating))
    for py in range(p.PH):
        for b in range(p.blocks):
            at = (py * p.blocks + b) * p.window * p.lanes
            if floating is float:
                input_grad_block_f32(block_start(grad_planes, p, py, b), taps, p.K_padded, p.window, weight_t,
                                     p.O, spread + at, channel_stride)
            else:
                input_grad_block_f64(block_start(grad_planes, p, py, b), taps, p.K_padded, p.window, weight_t,
                                     p.O, spread + at, channel_stride)
    copy_planes(grad_x, grad_planes, p, False)


cdef void transpose_weights(const floating* weight, const Plan* p, floating* weight_t) noexcept nogil:
    """weight_t[k][o] = weight[o][k], with zero rows for the padding taps k >= K."""
    cdef Py_ssize_t o, k
    memset(weight_t, 0, p.K_padded * p.O * sizeof(floating))
    for o in range(p.O):
        for k in range(p.K):
            weight_t[k * p.O + o] = weight[o * p.K + k]


cdef void add_chunks(const floating* chunks, Py_ssize_t chunk_count, Py_ssize_t size,
                     floating* total) noexcept nogil:
    """total = chunks[0] + chunks[1] + ..., in chunk order."""
    cdef Py_ssize_t chunk, i
    for i in range(size):
        total[i] = chunks[i]
    for chunk in range(1, chunk_count):
        for i in range(size):
            total[i] += chunks[chunk * size + i]


cdef int backward_chunks(const floating* x, const floating* grad_out, const signed char* argmax, Py_ssize_t N,
                         Py_ssize_t chunk_size, Py_ssize_t first_chunk, Py_ssize_t end_chunk,
                         const Py_ssize_t* taps, const floating* weight_t, const Plan* p, bint want_weight,
                         floating* grad_x, floating* weight_sums, floating* bias_sums) noexcept nogil:
    """Chunks first_chunk..end_chunk-1 of the batch: each chunk's weight and bias gradient sums into its
    own slots of weight_sums / bias_sums, and its images' input gradients (unless grad_x is NULL).
    Returns 1 if out of memory."""
    cdef Py_ssize_t image_size = p.C * p.H * p.W
    cdef Py_ssize_t grad_image = p.O * p.PH * p.PW
    cdef Py_ssize_t argmax_image = p.O * p.PH * p.argmax_width
    cdef Py_ssize_t spread_image = p.PH * p.blocks * p.window * p.lanes
    # Scratch, in elements: phase planes of a chunk's images, their spread gradients ([channel][image]
    # blocks), per-channel bias lanes, and the planes of one input gradient.
    cdef Py_ssize_t planes_size = chunk_size * p.plane_size
    cdef Py_ssize_t spread_size = p.O * chunk_size * spread_image
    cdef Py_ssize_t scratch_size = planes_size + spread_size + p.O * p.lanes + (p.plane_size if grad_x != NULL else 0)
    cdef void* scratch_memory = malloc(scratch_size * sizeof(floating) + BLOCK_BYTES)
    cdef const floating** block_inputs = <const floating**> malloc(chunk_size * p.PH * p.blocks * sizeof(floating*))
    cdef floating* planes = <floating*> align_block(scratch_memory)
    cdef floating* spread = planes + planes_size
    cdef floating* bias_lanes = spread + spread_size
    cdef floating* grad_planes = bias_lanes + p.O * p.lanes
    cdef Py_ssize_t chunk, first, images, i, o, ob, py, b, n
    cdef bint finite
    if scratch_memory == NULL or block_inputs == NULL:
        free(scratch_memory)
        free(block_inputs)
        return 1
    for chunk in range(first_chunk, end_chunk):
        first = chunk * chunk_size
        images = min(chunk_size, N - first)
        memset(bias_lanes, 0, p.O * p.lanes * sizeof(floating))
        for i in range(images):
            n = first + i
            copy_planes(<floating*> x + n * image_size, planes + i * p.plane_size, p, True)
            for py in range(p.PH):
                for b in range(p.blocks):
                    block_inputs[(i * p.PH + py) * p.blocks + b] = block_start(planes + i * p.plane_size, p, py, b)
            for o in range(p.O):
                spread_channel(grad_out + n * grad_image + o * p.PH * p.PW,
                               argmax + n * argmax_image + o * p.PH * p.argmax_width, p,
                               spread + (o * chunk_size + i) * spread_image, bias_lanes + o * p.lanes)
        for o in range(p.O):
            bias_sums[chunk * p.O + o] = lane_total(bias_lanes + o * p.lanes, p.lanes)
        if want_weight:
            finite = largest_magnitude(x + first * image_size, images, p) < INFINITY
            for ob in range((p.O + GRAD_CHANNELS - 1) // GRAD_CHANNELS):
                o = ob * GRAD_CHANNELS
                weight_grad_channels(block_inputs, images * p.PH * p.blocks, spread + o * chunk_size * spread_image,
                                     chunk_size * spread_image, <int> min(<Py_ssize_t> GRAD_CHANNELS, p.O - o), taps,
                                     p, finite, weight_sums + (chunk * p.O + o) * p.K)
        if grad_x != NULL:
            for i in range(images):
                input_grad_image(spread + i * spread_image, chunk_size * spread_image, taps, weight_t, p,
                                 grad_planes, grad_x + (first + i) * image_size)
    free(scratch_memory)
    free(block_inputs)
    return 0


cdef int backward_items(const floating* x, const floating* grad_out, const signed char* argmax, Py_ssize_t N,
                        Py_ssize_t chunk_size, Py_ssize_t first_item, Py_ssize_t end_item,
                        const Py_ssize_t* taps, const Plan* p, bint want_weight, floating* weight_sums,
                        floating* bias_sums) noexcept nogil:
    """backward_chunks without an input gradient, by work items: item = chunk * groups + group, for
    groups of GRAD_CHANNELS output channels.  The chunk's phase planes are made once per chunk; each
    channel's spread, bias sum and weight-gradient sums are those backward_chunks computes (the same
    operations in the same order), but a batch smaller than the team still splits (by channels).
    Returns 1 if out of memory."""
    cdef Py_ssize_t image_size = p.C * p.H * p.W
    cdef Py_ssize_t grad_image = p.O * p.PH * p.PW
    cdef Py_ssize_t argmax_image = p.O * p.PH * p.argmax_width
    cdef Py_ssize_t spread_image = p.PH * p.blocks * p.window * p.lanes
    cdef Py_ssize_t groups = (p.O + GRAD_CHANNELS - 1) // GRAD_CHANNELS
    # Scratch, in elements: phase planes of a chunk's images, one group's spread gradients
    # ([channel][image] blocks) and bias lanes.
    cdef Py_ssize_t planes_size = chunk_size * p.plane_size
    cdef Py_ssize_t spread_size = GRAD_CHANNELS * chunk_size * spread_image
    cdef void* scratch_memory = malloc((planes_size + spread_size + GRAD_CHANNELS * p.lanes) * sizeof(floating)
                                       + BLOCK_BYTES)
    cdef const floating** block_inputs = <const floating**> malloc(chunk_size * p.PH * p.blocks * sizeof(floating*))
    cdef floating* planes = <floating*> align_block(scratch_memory)
    cdef floating* spread = planes + planes_size
    cdef floating* bias_lanes = spread + spread_size
    cdef Py_ssize_t item, chunk, planes_of = -1, first = 0, images = 0, i, o, o0, channels, py, b, n
    cdef bint finite = True
    if scratch_memory == NULL or block_inputs == NULL:
        free(scratch_memory)
        free(block_inputs)
        return 1
    for item in range(first_item, end_item):
        chunk = item // groups
        if chunk != planes_of:
            first = chunk * chunk_size
            images = min(chunk_size, N - first)
            for i in range(images):
                copy_planes(<floating*> x + (first + i) * image_size, planes + i * p.plane_size, p, True)
                for py in range(p.PH):
                    for b in range(p.blocks):
                        block_inputs[(i * p.PH + py) * p.blocks + b] = block_start(planes + i * p.plane_size, p, py, b)
            finite = largest_magnitude(x + first * image_size, images, p) < INFINITY
            planes_of = chunk
        o0 = item % groups * GRAD_CHANNELS
        channels = min(<Py_ssize_t> GRAD_CHANNELS, p.O - o0)
        memset(bias_lanes, 0, GRAD_CHANNELS * p.lanes * sizeof(floating))
        for i in range(images):
            n = first + i
            for o in range(o0, o0 + channels):
                spread_channel(grad_out + n * grad_image + o * p.PH * p.PW,
                               argmax + n * argmax_image + o * p.PH * p.argmax_width, p,
                               spread + ((o - o0) * chunk_size + i) * spread_image, bias_lanes + (o - o0) * p.lanes)
        for o in range(o0, o0 + channels):
            bias_sums[chunk * p.O + o] = lane_total(bias_lanes + (o - o0) * p.lanes, p.lanes)
        if want_weight:
            weight_grad_channels(block_inputs, images * p.PH * p.blocks, spread, chunk_size * spread_image,
                                 <int> channels, taps, p, finite, weight_sums + (chunk * p.O + o0) * p.K)
    free(scratch_memory)
    free(block_inputs)
    return 0


def conv_relu_pool_backward(x, weight, grad_out, argmax, grad_x, grad_weight, grad_bias, int pad_h, int pad_w,
                            int pool_h, int pool_w, int num_threads):
    """Write the gradients of conv_relu_pool_forward from grad_out (shaped as its out) and the
    forward's argmax.

    Any of grad_x, grad_weight, grad_bias may be None (not wanted)."""
    if float64_call(x, "conv_relu_pool_backward"):
        backward_as(<double> 0, x, weight, grad_out, argmax, grad_x, grad_weight, grad_bias, pad_h, pad_w, pool_h,
                    pool_w, num_threads)
    else:
        backward_as(<float> 0, x, weight, grad_out, argmax, grad_x, grad_weight, grad_bias, pad_h, pad_w, pool_h,
                    pool_w, num_threads)


cdef backward_as(floating kind, x_array, weight_array, grad_out_array, argmax_array, grad_x_array,
                 grad_weight_array, grad_bias_array, int pad_h, int pad_w, int pool_h, int pool_w, int num_threads):
    cdef int typenum = numpy_type(kind)
    cdef str op = "conv_relu_pool_backward"
    cdef cnp.ndarray xa = array_arg(x_array, typenum, 4, False, op, "x")
    cdef cnp.ndarray wa = array_arg(weight_array, typenum, 4, False, op, "weight")
    cdef cnp.ndarray ga = array_arg(grad_out_array, typenum, 4, False, op, "grad_out")
    cdef cnp.ndarray aa = array_arg(argmax_array, cnp.NPY_INT8, 4, False, op, "argmax")
    cdef cnp.ndarray gxa = optional_arg(grad_x_array, typenum, 4, True, op, "grad_x")
    cdef cnp.ndarray gwa = optional_arg(grad_weight_array, typenum, 4, True, op, "grad_weight")
    cdef cnp.ndarray gba = optional_arg(grad_bias_array, typenum, 1, True, op, "grad_bias")
    cdef Plan p = plan_for(kind, xa, wa, gba, ga, aa, pad_h, pad_w, pool_h, pool_w, op)
    cdef Py_ssize_t N = dim(xa, 0)
    if (gxa is not None and not same_shape(gxa, xa)) or (gwa is not None and not same_shape(gwa, wa)):
        shape_error(op, (("x", xa), ("weight", wa), ("grad_x", gxa), ("grad_weight", gwa)))
    cdef const floating* x = <const floating*> data(xa)
    cdef const floating* grad_out = <const floating*> data(ga)
    cdef const signed char* argmax = <const signed char*> data(aa)
    cdef floating* grad_weight_data = <floating*> data(gwa)
    cdef floating* grad_bias_data = <floating*> data(gba)
    cdef Py_ssize_t chunk_count = min(N, MAX_BATCH_CHUNKS)
    cdef Py_ssize_t chunk_size = (N + chunk_count - 1) // chunk_count if chunk_count else 0
    cdef floating* grad_x_data = <floating*> data(gxa)
    cdef bint want_x = grad_x_data != NULL
    cdef bint want_weight = grad_weight_data != NULL
    cdef bint want_bias = grad_bias_data != NULL
    cdef int threads
    cdef int failed = 0
    cdef int* failed_flag = &failed
    cdef Py_ssize_t part, items
    cdef Py_ssize_t* taps = NULL
    cdef floating* weight_t = NULL
    cdef floating* weight_sums = NULL
    cdef floating* bias_sums = NULL

    if chunk_count == 0 or p.O * p.PH * p.PW == 0 or not (want_x or want_weight or want_bias):
        if want_weight:
            memset(grad_weight_data, 0, p.O * p.K * sizeof(floating))
        if want_bias:
            memset(grad_bias_data, 0, p.O * sizeof(floating))
        if want_x:
            memset(grad_x_data, 0, N * p.C * p.H * p.W * sizeof(floating))
        return
    chunk_count = (N + chunk_size - 1) // chunk_size
    # Without an input gradient the work splits by (chunk, channel group) items; with one, by chunks
    # (the input gradient of an image needs every channel's spread).
    items = chunk_count if want_x else chunk_count * ((p.O + GRAD_CHANNELS - 1) // GRAD_CHANNELS)
    threads = choose_threads(N * p.O * p.K * p.PH * p.PW * p.window * (1 + want_x), items, num_threads)
    taps = <Py_ssize_t*> malloc(p.window * p.K_padded * sizeof(Py_ssize_t))
    weight_t = <floating*> malloc(p.K_padded * p.O * sizeof(floating))
    weight_sums = <floating*> malloc(chunk_count * p.O * p.K * sizeof(floating))
    bias_sums = <floating*> malloc(chunk_count * p.O * sizeof(floating))
    if taps == NULL or weight_t == NULL or weight_sums == NULL or bias_sums == NULL:
        failed = 1
    else:
        fill_taps(&p, taps)
        transpose_weights(<const floating*> data(wa), &p, weight_t)
        if not want_x and threads == 1:  # no parallel region for small work
            with nogil:
                failed = backward_items(x, grad_out, argmax, N, chunk_size,
                                        0, items, taps, &p, want_weight, weight_sums, bias_sums)
        elif not want_x:
            for part in prange(threads, nogil=True, schedule="static", num_threads=threads):
                if backward_items(x, grad_out, argmax, N, chunk_size,
                                  part * items // threads, (part + 1) * items // threads, taps, &p, want_weight,
                                  weight_sums, bias_sums):
                    failed_flag[0] = 1
        elif threads == 1:  # no parallel region for small work
            with nogil:
                failed = backward_chunks(x, grad_out, argmax, N, chunk_size,
                                         0, chunk_count, taps, weight_t, &p, want_weight, grad_x_data,
                                         weight_sums, bias_sums)
        else:
            for part in prange(threads, nogil=True, schedule="static", num_threads=threads):
                if backward_chunks(x, grad_out, argmax, N, chunk_size,
                                   part * chunk_count // threads, (part + 1) * chunk_count // threads, taps,
                                   weight_t, &p, want_weight, grad_x_data, weight_sums, bias_sums):
                    failed_flag[0] = 1
        if not failed:
            if want_weight:
                add_chunks(weight_sums, chunk_count, p.O * p.K, grad_weight_data)
            if want_bias:
                add_chunks(bias_sums, chunk_count, p.O, grad_bias_data)
    free(taps)
    free(weight_t)
    free(weight_sums)
    free(bias_sums)
    if failed:
        raise MemoryError("conv_relu_pool_backward: out of memory for the scratch buffers")
