"""2-D convolution kernels (groups=1, dilation=1) on the register tiles of gemm.pxd.

With K = C*KH*KW taps and P = OH*OW output positions per image, and col[K, P] the taps of the
zero-padded image under each output position (im2col):

    forward:      out[O, P]  = weight[O, K] @ col[K, P] + bias
    grad_weight:  gW[O, K]   = sum over images of grad_out[O, P] @ col[K, P]^T
    grad_input:   gcol[K, P] = weight^T @ grad_out[O, P], added back onto the image (col2im).

Stride 1 (the common case) never builds col: row k of col is the padded image read from the
offset of tap k, over a "wide" grid of positions oy * Wp + ox that runs across the padded width
Wp.  The forward computes the wide grid and stores only its real columns (ox < OW).  The input
gradient computes gcol over the wide grid from grad_out laid out in rows of Wp with zeros past
OW, so that a tap's row of gcol adds back onto one contiguous stretch of the padded image.  Other
strides build col and add gcol back position by position.

The weight gradient reads the taps of the padded image in place as the rows of its product and
sums over the real output positions only, for any stride.  Weight and bias gradients are sums
over the batch: the batch is cut into chunks whose size depends only on the batch size, each
chunk sums into its own buffer, and the buffers are added in chunk order, so the result does not
depend on the thread count.  Forward and input gradient run in parallel over images.  The Python
layer validates shapes and hands in C-contiguous arrays.
"""
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from arrays cimport array_arg, data, dim, float64_call, numpy_type, optional_arg, same_shape, shape_error

from gemm cimport (GEMM_MR, GEMM_PACKED_VECTORS, GEMM_ROWS_MR, col2im_panel, copy_rows, gemm, lanes,
                   pack_a, packed_a_size, packed_cols, round_up, tile_packed, tile_rows, transpose)

cnp.import_array()

# Below this many multiply-adds (a few microseconds) a parallel region costs more than it saves.
cdef Py_ssize_t PARALLEL_MIN_WORK = 1 << 20
# The weight/bias gradient sums over at most this many batch chunks.
cdef Py_ssize_t MAX_BATCH_CHUNKS = 16


cdef struct Geometry:
    Py_ssize_t C, H, W, KH, KW, OH, OW
    Py_ssize_t stride_h, stride_w, pad_h, pad_w
    Py_ssize_t Hp, Wp      # the zero-padded input
    Py_ssize_t K, P        # taps, output positions


cdef Geometry make_geometry(Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t KH, Py_ssize_t KW,
                            Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t stride_h, Py_ssize_t stride_w,
                            Py_ssize_t pad_h, Py_ssize_t pad_w):
    cdef Geometry g
    g.C, g.H, g.W, g.KH, g.KW, g.OH, g.OW = C, H, W, KH, KW, OH, OW
    g.stride_h, g.stride_w, g.pad_h, g.pad_w = stride_h, stride_w, pad_h, pad_w
    g.Hp, g.Wp = H + 2 * pad_h, W + 2 * pad_w
    g.K, g.P = C * KH * KW, OH * OW
    return g


cdef inline bint unit_stride(const Geometry* g) noexcept nogil:
    return g.stride_h == 1 and g.stride_w == 1


cdef int choose_threads(Py_ssize_t work, int num_threads) noexcept nogil:
    return num_threads if work >= PARALLEL_MIN_WORK else 1


cdef void* aligned_buffer(Py_ssize_t elements, Py_ssize_t itemsize, bint zeroed=True) noexcept nogil:
    """elements (zeros unless not `zeroed`) at a 64-byte boundary, or NULL; release with free_buffer."""
    cdef Py_ssize_t size = max(elements, 1) * itemsize
    cdef char* raw = <char*> malloc(size + 64)
    cdef char* aligned
    if raw == NULL:
        return NULL
    aligned = raw + 64 - (<size_t> raw) % 64
    (<void**> aligned - 1)[0] = raw
    if zeroed:
        memset(aligned, 0, size)
    return aligned


cdef void free_buffer(void* buffer) noexcept nogil:
    if buffer != NULL:
        free((<void**> buffer - 1)[0])


cdef void tap_offsets(Py_ssize_t planes, Py_ssize_t plane_h, Py_ssize_t plane_w, Py_ssize_t KH,
                      Py_ssize_t KW, Py_ssize_t* offsets) noexcept nogil:
    """offsets[(c * KH + kh) * KW + kw] = where tap (kh, kw) of plane c starts in planes of plane_h x plane_w."""
    cdef Py_ssize_t c, kh, kw
    for c in range(planes):
        for kh in range(KH):
            for kw in range(KW):
                offsets[(c * KH + kh) * KW + kw] = (c * plane_h + kh) * plane_w + kw


# ------------------------------------------------------------------ image layouts
cdef void pad_image(const floating* image, floating* padded, const Geometry* g) noexcept nogil:
    """padded[c, y + pad_h, x + pad_w] = image[c, y, x].  Only the interior is written: the border
    stays as it is (zero)."""
    cdef Py_ssize_t c
    if g.pad_h == 0 and g.pad_w == 0:
        memcpy(padded, image, g.C * g.H * g.W * sizeof(floating))
        return
    for c in range(g.C):
        copy_rows(image + c * g.H * g.W, g.H, g.W, g.W, padded + (c * g.Hp + g.pad_h) * g.Wp + g.pad_w, g.Wp)


cdef void crop_image(const floating* padded, floating* image, const Geometry* g) noexcept nogil:
    """image[c, y, x] = padded[c, y + pad_h, x + pad_w]."""
    cdef Py_ssize_t c
    for c in range(g.C):
        copy_rows(padded + (c * g.Hp + g.pad_h) * g.Wp + g.pad_w, g.H, g.W, g.Wp, image + c * g.H * g.W, g.W)


cdef struct WideGrid:
    # A wide result: positions q = y * wide_w + x of planes height x width (x < width is real),
    # computed in tiles of packed_cols() positions and stored compacted (tile_packed's keep/dest).
    Py_ssize_t wide_w, width, cols, tiles  # cols = (height - 1) * wide_w + width positions
    unsigned* keep                         # per vector of every tile: the real lanes
    Py_ssize_t* dest                       # per vector: how many real positions come before it


cdef bint make_wide_grid(WideGrid* grid, Py_ssize_t height, Py_ssize_t width, Py_ssize_t wide_w,
                         Py_ssize_t vector) noexcept nogil:
    """Fill grid (free with free_wide_grid); False if out of memory."""
    cdef Py_ssize_t i, lane, q0, q
    grid.wide_w, grid.width = wide_w, width
    grid.cols = (height - 1) * wide_w + width
    grid.tiles = (grid.cols + vector * GEMM_PACKED_VECTORS - 1) // (vector * GEMM_PACKED_VECTORS)
    grid.keep = <unsigned*> malloc(max(grid.tiles, 1) * GEMM_PACKED_VECTORS * sizeof(unsigned))
    grid.dest = <Py_ssize_t*> malloc(max(grid.tiles, 1) * GEMM_PACKED_VECTORS * sizeof(Py_ssize_t))
    if grid.keep == NULL or grid.dest == NULL:
        return False
    for i in range(grid.tiles * GEMM_PACKED_VECTORS):
        q0 = i * vector
        grid.keep[i] = 0
        for lane in range(vector):
            q = q0 + lane
            if q < grid.cols and q % wide_w < width:
                grid.keep[i] |= 1u << lane
        grid.dest[i] = q0 // wide_w * width + min(q0 % wide_w, width)
    return True


cdef void free_wide_grid(WideGrid* grid) noexcept nogil:
    free(grid.keep)
    free(grid.dest)


cdef void wide_product(Py_ssize_t rows, Py_ssize_t K, const floating* packed_a, const floating* source,
                       const Py_ssize_t* offsets, const floating* row_start, const WideGrid* grid,
                       floating* out, Py_ssize_t out_ld) noexcept nogil:
    """out[r, real position] = row_start[r] + sum over k of A[r, k] * source[offsets[k] + q] for the wide
    positions q of grid, stored compacted: out row r has out_ld elements."""
    cdef Py_ssize_t nr = packed_cols(<floating*> NULL)
    cdef Py_ssize_t ib, jb, i0
    for jb in range(grid.tiles):
        for ib in range((rows + GEMM_MR - 1) // GEMM_MR):
            i0 = ib * GEMM_MR
            tile_packed(K, packed_a + i0 * K, source + jb * nr, offsets,
                        row_start + i0 if row_start != NULL else NULL, out + i0 * out_ld, out_ld,
                        min(<Py_ssize_t> GEMM_MR, rows - i0), nr, False,
                        grid.keep + jb * GEMM_PACKED_VECTORS, grid.dest + jb * GEMM_PACKED_VECTORS)


cdef void col_transfer(floating* padded, floating* col, const Geometry* g, bint to_col) noexcept nogil:
    """to_col: col[k, p] = the padded image under tap k of output position p (im2col).  Otherwise
    add col back onto the padded image (col2im), tap by tap in a fixed order."""
    cdef Py_ssize_t c, kh, kw, oy, ox
    cdef floating* image_row
    cdef floating* col_row
    for c in range(g.C):
        for kh in range(g.KH):
            for kw in range(g.KW):
                for oy in range(g.OH):
                    image_row = padded + (c * g.Hp + oy * g.stride_h + kh) * g.Wp + kw
                    col_row = col + ((c * g.KH + kh) * g.KW + kw) * g.P + oy * g.OW
                    if to_col:
                        for ox in range(g.OW):
                            col_row[ox] = image_row[ox * g.stride_w]
                    else:
                        for ox in range(g.OW):
                            image_row[ox * g.stride_w] += col_row[ox]


# ------------------------------------------------------------------ forward
def conv2d_forward(x, weight, bias, out, int stride_h, int stride_w, int pad_h, int pad_w, int num_threads):
    """out = conv2d(x, weight, bias) for x [N, C, H, W], weight [O, C, KH, KW], bias [O] or None,
    out [N, O, OH, OW]."""
    if float64_call(x, "conv2d_forward"):
        forward_as(<double> 0, x, weight, bias, out, stride_h, stride_w, pad_h, pad_w, num_threads)
    else:
        forward_as(<float> 0, x, weight, bias, out, stride_h, stride_w, pad_h, pad_w, num_threads)


cdef int check_conv_shapes(cnp.ndarray x, cnp.ndarray weight, cnp.ndarray bias, cnp.ndarray out, str op) except -1:
    """Channels and batch agree (the geometry itself is validated in Python); bias may be None."""
    if (dim(weight, 1) != dim(x, 1) or dim(out, 0) != dim(x, 0) or dim(out, 1) != dim(weight, 0)
            or (bias is not None and dim(bias, 0) != dim(weight, 0))):
        shape_error(op, (("x", x), ("weight", weight), ("bias", bias), ("out", out)))
    return 0


cdef forward_as(floating kind, x_array, weight_array, bias_array, out_array, int stride_h, int stride_w,
                int pad_h, int pad_w, int num_threads):
    cdef int typenum = numpy_type(kind)
    cdef cnp.ndarray xa = array_arg(x_array, typenum, 4, False, "conv2d_forward", "x")
    cdef cnp.ndarray wa = array_arg(weight_array, typenum, 4, False, "conv2d_forward", "weight")
    cdef cnp.ndarray ba = optional_arg(bias_array, typenum, 1, False, "conv2d_forward", "bias")
    cdef cnp.ndarray oa = array_arg(out_array, typenum, 4, True, "conv2d_forward", "out")
    check_conv_shapes(xa, wa, ba, oa, "conv2d_forward")
    cdef Geometry g = make_geometry(dim(xa, 1), dim(xa, 2), dim(xa, 3), dim(wa, 2), dim(wa, 3), dim(oa, 2),
                                    dim(oa, 3), stride_h, stride_w, pad_h, pad_w)
    cdef Py_ssize_t N = dim(xa, 0), O = dim(wa, 0)
    cdef const floating* x = <const floating*> data(xa)
    cdef const floating* weight = <const floating*> data(wa)
    cdef const floating* bias = <const floating*> data(ba)
    cdef floating* out = <floating*> data(oa)
    cdef Py_ssize_t padded_o = round_up(O, GEMM_MR)
    cdef int threads = choose_threads(N * O * g.K * g.P, num_threads)
    cdef floating* packed_weight
    cdef floating* padded_bias
    cdef Py_ssize_t* offsets
    cdef Py_ssize_t o
    cdef bint failed
    if N == 0 or O == 0 or g.P == 0:
        return
    packed_weight = <floating*> aligned_buffer(packed_a_size(O, g.K), sizeof(floating))
    padded_bias = <floating*> aligned_buffer(padded_o, sizeof(floating))
    offsets = <Py_ssize_t*> malloc(max(g.K, 1) * sizeof(Py_ssize_t))
    failed = packed_weight == NULL or padded_bias == NULL or offsets == NULL
    if not failed:
        pack_a(O, g.K, weight, g.K, 1, packed_weight)
        if bias != NULL:
            for o in range(O):
                padded_bias[o] = bias[o]
        tap_offsets(g.C, g.Hp, g.Wp, g.KH, g.KW, offsets)
        with nogil:
            if unit_stride(&g):
                failed = forward_shifted(x, packed_weight, padded_bias if bias != NULL else NULL, offsets, out, N, O,
                                         &g, threads)
            else:
                failed = forward_im2col(x, packed_weight, padded_bias if bias != NULL else NULL, out, N, O, &g,
                                        threads)
    free_buffer(packed_weight)
    free_buffer(padded_bias)
    free(offsets)
    if failed:
        raise MemoryError("conv2d_forward: could not allocate the work buffers")


cdef bint forward_shifted(const floating* x, const floating* packed_weight, const floating* padded_bias,
                          const Py_ssize_t* offsets, floating* out, Py_ssize_t N, Py_ssize_t O,
                          const Geometry* g, int threads) noexcept nogil:
    """Stride 1: each image's product reads the padded image at the taps' offsets (no im2col), over
    the wide grid of positions.  True if a buffer could not be allocated."""
    cdef WideGrid grid
    cdef bint failed = not make_wide_grid(&grid, g.OH, g.OW, g.Wp, lanes(<floating*> NULL))
    cdef bint* failed_flag = &failed  # assignments inside a parallel block stay thread-private
    # The last tile reads up to `overrun` elements past the last real position.
    cdef Py_ssize_t overrun = grid.tiles * packed_cols(<floating*> NULL) - grid.cols
    cdef Py_ssize_t n
    cdef floating* padded = NULL
    if not failed:
        with parallel(num_threads=threads):
            padded = <floating*> aligned_buffer(g.C * g.Hp * g.Wp + overrun, sizeof(floating))
            if padded == NULL:
                failed_flag[0] = True
            for n in prange(N, schedule="static"):
                if padded == NULL:
                    continue
                # Copied even when unpadded: the tiles read the image in an order that hardware
                # prefetching cannot follow, so a sequential copy first is faster (~30% for an 86 KB image).
                pad_image(x + n * g.C * g.H * g.W, padded, g)
                wide_product(O, g.K, packed_weight, padded, offsets, padded_bias, &grid, out + n * O * g.P, g.P)
            free_buffer(padded)
    free_wide_grid(&grid)
    return failed


cdef bint forward_im2col(const floating* x, const floating* packed_weight, const floating* padded_bias,
                         floating* out, Py_ssize_t N, Py_ssize_t O, const Geometry* g,
                         int threads) noexcept nogil:
    """Any stride: im2col, then out = weight @ col, started from the bias."""
    cdef Py_ssize_t n, o, p
    cdef floating* padded = NULL
    cdef floating* col = NULL
    cdef floating* out_n
    cdef bint failed = False
    cdef bint* failed_flag = &failed  # assignments inside a parallel block stay thread-private
    with parallel(num_threads=threads):
        padded = <floating*> aligned_buffer(g.C * g.Hp * g.Wp, sizeof(floating))
        col = <floating*> aligned_buffer(g.K * g.P, sizeof(floating))
        if padded == NULL or col == NULL:
            failed_flag[0] = True
        for n in prange(N, schedule="static"):
            if padded == NULL or col == NULL:
                continue
            pad_image(x + n * g.C * g.H * g.W, padded, g)
            col_transfer(padded, col, g, True)
            out_n = out + n * O * g.P
            if padded_bias != NULL:
                for o in range(O):
                    for p in range(g.P):
                        out_n[o * g.P + p] = padded_bias[o]
            gemm(O, g.P, g.K, packed_weight, col, g.P, 1, out_n, g.P, padded_bias != NULL)
        free_buffer(padded)
        free_buffer(col)
    return failed


# ------------------------------------------------------------------ backward
cdef struct InputGrad:
    # The input gradient: gcol = weight^T @ grad_out, added back onto the (padded) image tap by
    # tap (col2im).  Stride 1 computes gcol over the wide grid of output positions, a panel of
    # packed_cols() positions at a time, from grad_out laid out in rows of Wp with zeros past OW:
    # a wide panel's extra columns come out zero, and each tap's panel row adds onto one
    # contiguous stretch of the padded image.  Other strides compute gcol over the real positions
    # and add it back position by position.
    bint wanted
    void* packed_weight           # weight^T (floating), packed
    Py_ssize_t* grad_offsets      # stride 1: where grad_out's planes start in its wide layout
    Py_ssize_t* row_offsets       # stride 1: where kernel row (c, kh) starts in the padded image
    Py_ssize_t wide_cols, panels  # stride 1: the wide grid's positions, panels of them
    Py_ssize_t margin, panel_ld   # stride 1: a gcol panel's rows, with zeros either side
    Py_ssize_t work_size          # per-thread buffer


cdef bint plan_input_grad(InputGrad* q, const floating* weight, Py_ssize_t O, const Geometry* g) noexcept nogil:
    """Fill q (free with free_input_grad); False if out of memory."""
    cdef Py_ssize_t nr = packed_cols(<floating*> NULL)
    cdef Py_ssize_t padded_k = round_up(g.K, GEMM_MR)
    cdef Py_ssize_t o
    q.grad_offsets, q.row_offsets = NULL, NULL
    q.packed_weight = aligned_buffer(packed_a_size(g.K, O), sizeof(floating))
    if q.packed_weight == NULL:
        return False
    pack_a(g.K, O, weight, 1, g.K, <floating*> q.packed_weight)
    if not unit_stride(g):
        q.work_size = g.K * g.P + g.C * g.Hp * g.Wp  # gcol, padded image
        return True
    q.wide_cols = (g.OH - 1) * g.Wp + g.OW
    q.panels = (q.wide_cols + nr - 1) // nr
    q.grad_offsets = <Py_ssize_t*> malloc(max(O, 1) * sizeof(Py_ssize_t))
    q.row_offsets = <Py_ssize_t*> malloc(max(g.C * g.KH, 1) * sizeof(Py_ssize_t))
    if q.grad_offsets == NULL or q.row_offsets == NULL:
        return False
    for o in range(O):
        q.grad_offsets[o] = o * g.OH * g.Wp
    tap_offsets(g.C, g.Hp, g.Wp, g.KH, 1, q.row_offsets)
    # col2im_panel reads a panel row from KW - 1 before it to a vector past its shifted end.
    q.margin = round_up(g.KW - 1, lanes(<floating*> NULL))
    q.panel_ld = q.margin + nr + q.margin + lanes(<floating*> NULL)
    # wide grad_out (the last panel reads past its end), a gcol panel, the padded image
    q.work_size = O * g.OH * g.Wp + nr + padded_k * q.panel_ld + g.C * g.Hp * g.Wp
    return True


cdef void free_input_grad(InputGrad* q) noexcept nogil:
    free_buffer(q.packed_weight)
    free(q.grad_offsets)
    free(q.row_offsets)


cdef void input_grad_image(const floating* grad_out, floating* work, floating* grad_x, Py_ssize_t O,
                           const Geometry* g, const InputGrad* q) noexcept nogil:
    """One image's input gradient.  `work` holds q.work_size zeros at the first call and is reused
    image after image."""
    cdef Py_ssize_t nr = packed_cols(<floating*> NULL)
    cdef Py_ssize_t padded_k = round_up(g.K, GEMM_MR)
    cdef Py_ssize_t jb, ib, q0, count
    cdef floating* wide_grad = work
    cdef floating* panel = work + O * g.OH * g.Wp + nr + q.margin  # the first panel row's column 0
    cdef floating* padded = panel - q.margin + padded_k * q.panel_ld
    cdef floating* target
    if not unit_stride(g):
        padded = work + g.K * g.P
        gemm(g.K, g.P, O, <const floating*> q.packed_weight, grad_out, g.P, 1, work, g.P, False)
        memset(padded, 0, g.C * g.Hp * g.Wp * sizeof(floating))
        col_transfer(padded, work, g, False)
        crop_image(padded, grad_x, g)
        return
    # The columns ox >= OW of each wide row stay zero from the start.
    copy_rows(grad_out, O * g.OH, g.OW, g.OW, wide_grad, g.Wp)
    target = padded if g.pad_h or g.pad_w else grad_x
    memset(target, 0, g.C * g.Hp * g.Wp * sizeof(floating))
    for jb in range(q.panels):
        q0 = jb * nr
        count = min(nr, q.wide_cols - q0)
        for ib in range(padded_k // GEMM_MR):
            tile_packed(O, <const floating*> q.packed_weight + ib * GEMM_MR * O, wide_grad + q0, q.grad_offsets,
                        NULL, panel + ib * GEMM_MR * q.panel_ld, q.panel_ld, GEMM_MR, nr, False)
        # Past `count` a panel row holds zeros (the wide grid's own, then the margin's).
        col2im_panel(panel, q.panel_ld, g.C * g.KH, g.KW, count + g.KW - 1, target + q0, q.row_offsets)
    if target == padded:
        crop_image(padded, grad_x, g)


def conv2d_backward(x, weight, grad_out, grad_x, grad_weight, grad_bias, int stride_h, int stride_w, int pad_h,
                    int pad_w, int num_threads):
    """Write the gradients of conv2d (shapes as conv2d_forward's); grad_x and grad_bias may be None
    (not wanted)."""
    if float64_call(x, "conv2d_backward"):
        backward_as(<double> 0, x, weight, grad_out, grad_x, grad_weight, grad_bias, stride_h, stride_w, pad_h,
                    pad_w, num_threads)
    else:
        backward_as(<float> 0, x, weight, grad_out, grad_x, grad_weight, grad_bias, stride_h, stride_w, pad_h,
                    pad_w, num_threads)


cdef backward_as(floating kind, x_array, weight_array, grad_out_array, grad_x_array, grad_weight_array,
                 grad_bias_array, int stride_h, int stride_w, int pad_h, int pad_w, int num_threads):
    cdef int typenum = numpy_type(kind)
    cdef cnp.ndarray xa = array_arg(x_array, typenum, 4, False, "conv2d_backward", "x")
    cdef cnp.ndarray wa = array_arg(weight_array, typenum, 4, False, "conv2d_backward", "weight")
    cdef cnp.ndarray ga = array_arg(grad_out_array, typenum, 4, False, "conv2d_backward", "grad_out")
    cdef cnp.ndarray gxa = optional_arg(grad_x_array, typenum, 4, True, "conv2d_backward", "grad_x")
    cdef cnp.ndarray gwa = array_arg(grad_weight_array, typenum, 4, True, "conv2d_backward", "grad_weight")
    cdef cnp.ndarray gba = optional_arg(grad_bias_array, typenum, 1, True, "conv2d_backward", "grad_bias")
    check_conv_shapes(xa, wa, gba, ga, "conv2d_backward")
    if (gxa is not None and not same_shape(gxa, xa)) or not same_shape(gwa, wa):
        shape_error("conv2d_backward", (("x", xa), ("weight", wa), ("grad_x", gxa), ("grad_weight", gwa)))
    cdef Geometry g = make_geometry(dim(xa, 1), dim(xa, 2), dim(xa, 3), dim(wa, 2), dim(wa, 3), dim(ga, 2),
                                    dim(ga, 3), stride_h, stride_w, pad_h, pad_w)
    cdef Py_ssize_t N = dim(xa, 0), O = dim(wa, 0)
    cdef const floating* x = <const floating*> data(xa)
    cdef const floating* weight = <const floating*> data(wa)
    cdef const floating* grad_out = <const floating*> data(ga)
    cdef floating* grad_x = <floating*> data(gxa)
    cdef floating* grad_weight = <floating*> data(gwa)
    cdef floating* grad_bias = <floating*> data(gba)
    # Per chunk, the weight gradient is summed transposed, [taps][out channels], padded to whole tiles.
    cdef Py_ssize_t sum_rows = round_up(g.K, GEMM_ROWS_MR)
    cdef Py_ssize_t sum_cols = round_up(O, lanes(<floating*> NULL))
    cdef Py_ssize_t chunk_count = min(N, MAX_BATCH_CHUNKS)
    cdef Py_ssize_t chunk_size = (N + chunk_count - 1) // chunk_count if chunk_count else 0
    cdef int threads = choose_threads(N * O * g.K * g.P * (2 if grad_x != NULL else 1), num_threads)
    cdef InputGrad q
    cdef Py_ssize_t* row_offsets = NULL
    cdef floating* sums = NULL
    cdef floating* bias_sums = NULL
    cdef Py_ssize_t o, r
    cdef bint failed

    if chunk_count == 0 or O == 0 or g.P == 0:  # empty sums (otherwise every entry is written below)
        memset(grad_weight, 0, O * g.K * sizeof(floating))
        if grad_bias != NULL:
            memset(grad_bias, 0, O * sizeof(floating))
        if grad_x != NULL:
            memset(grad_x, 0, N * g.C * g.H * g.W * sizeof(floating))
        return
    chunk_count = (N + chunk_size - 1) // chunk_size
    q.wanted = grad_x != NULL
    q.packed_weight, q.grad_offsets, q.row_offsets = NULL, NULL, NULL
    # Each chunk's thread zeroes its sums (backward_chunks): no serial pass over all of them.
    sums = <floating*> aligned_buffer(chunk_count * sum_rows * sum_cols, sizeof(floating), False)
    bias_sums = <floating*> aligned_buffer(chunk_count * sum_cols, sizeof(floating), False)
    # The taps of the padded image are the rows of the weight-gradient product; rows past K repeat tap 0.
    row_offsets = <Py_ssize_t*> malloc(max(sum_rows, 1) * sizeof(Py_ssize_t))
    failed = (sums == NULL or bias_sums == NULL or row_offsets == NULL
              or (q.wanted and not plan_input_grad(&q, weight, O, &g)))
    if not failed:
        tap_offsets(g.C, g.Hp, g.Wp, g.KH, g.KW, row_offsets)
        for r in range(g.K, sum_rows):
            row_offsets[r] = 0
        with nogil:
            failed = backward_chunks(x, grad_out, grad_x, row_offsets, sums, bias_sums, sum_rows, sum_cols,
                                     chunk_count, chunk_size, N, O, &g, &q, threads)
    if not failed:
        with nogil:
            add_chunks(sums, chunk_count, g.K, sum_rows * sum_cols, sum_cols, threads)
        add_chunks(bias_sums, chunk_count, 1, sum_cols, sum_cols, 1)
        transpose(sums, g.K, O, sum_cols, grad_weight, g.K)
        if grad_bias != NULL:
            for o in range(O):
                grad_bias[o] = bias_sums[o]
    free_buffer(sums)
    free_buffer(bias_sums)
    free(row_offsets)
    free_input_grad(&q)
    if failed:
        raise MemoryError("conv2d_backward: could not allocate the work buffers")


cdef void add_chunks(floating* chunks, Py_ssize_t chunk_count, Py_ssize_t rows, Py_ssize_t chunk_size,
                     Py_ssize_t row_size, int threads) noexcept nogil:
    """Add chunks 1, 2, ... (chunk_size apart) one after another into chunk 0, for its first `rows`
    rows of row_size: rows in parallel, every entry's sum in chunk order."""
    cdef Py_ssize_t row, chunk, i
    cdef floating* dst
    for row in prange(rows, schedule="static", num_threads=threads):
        dst = chunks + row * row_size
        for chunk in range(1, chunk_count):
            for i in range(row_size):
                dst[i] += dst[chunk * chunk_size + i]


cdef bint backward_chunks(const floating* x, const floating* grad_out, floating* grad_x,
                          const Py_ssize_t* row_offsets, floating* sums, floating* bias_sums,
                          Py_ssize_t sum_rows, Py_ssize_t sum_cols, Py_ssize_t chunk_count,
                          Py_ssize_t chunk_size, Py_ssize_t N, Py_ssize_t O, const Geometry* g,
                          const InputGrad* q, int threads) noexcept nogil:
    """Per chunk of images, in parallel: the chunk's weight/bias gradient sums, and each image's
    input gradient (if q.wanted).  True if a buffer could not be allocated."""
    cdef Py_ssize_t vector = lanes(<floating*> NULL)
    cdef Py_ssize_t image_size = g.C * g.H * g.W
    cdef bint unpadded = g.pad_h == 0 and g.pad_w == 0
    cdef Py_ssize_t chunk, n, rb, ob, r0, o0, p, o
    cdef const floating* source
    cdef floating* padded = NULL
    cdef floating* grad_t = NULL
    cdef floating* work = NULL
    cdef floating* chunk_sum
    cdef floating* bias_sum
    cdef bint failed = False
    cdef bint* failed_flag = &failed  # assignments inside a parallel block stay thread-private
    with parallel(num_threads=threads):
        padded = <floating*> aligned_buffer(g.C * g.Hp * g.Wp, sizeof(floating))
        grad_t = <floating*> aligned_buffer(g.P * sum_cols, sizeof(floating))
        work = <floating*> aligned_buffer(q.work_size, sizeof(floating)) if q.wanted else NULL
        if padded == NULL or grad_t == NULL or (q.wanted and work == NULL):
            failed_flag[0] = True
        for chunk in prange(chunk_count, schedule="static"):
            if padded == NULL or grad_t == NULL or (q.wanted and work == NULL):
                continue
            chunk_sum = sums + chunk * sum_rows * sum_cols
            bias_sum = bias_sums + chunk * sum_cols
            memset(chunk_sum, 0, sum_rows * sum_cols * sizeof(floating))
            memset(bias_sum, 0, sum_cols * sizeof(floating))
            for n in range(chunk * chunk_size, min(N, (chunk + 1) * chunk_size)):
                # The weight gradient reads only real positions: an unpadded image is read in place.
                if unpadded:
                    source = x + n * image_size
                else:
                    pad_image(x + n * image_size, padded, g)
                    source = padded
                # grad_t[p, o] = grad_out[o, p]; its columns past O stay zero.
                transpose(grad_out + n * O * g.P, O, g.P, g.P, grad_t, sum_cols)
                for p in range(g.P):
                    for o in range(O):
                        bias_sum[o] += grad_t[p * sum_cols + o]
                for rb in range(sum_rows // GEMM_ROWS_MR):
                    r0 = rb * GEMM_ROWS_MR
                    for ob in range((sum_cols + 2 * vector - 1) // (2 * vector)):
                        o0 = ob * 2 * vector
                        tile_rows(g.OH, g.OW, source, row_offsets + r0, g.stride_h * g.Wp, g.stride_w,
                                  grad_t + o0, sum_cols, chunk_sum + r0 * sum_cols + o0, sum_cols,
                                  GEMM_ROWS_MR, min(2 * vector, sum_cols - o0), True)
                if q.wanted:
                    input_grad_image(grad_out + n * O * g.P, work, grad_x + n * image_size, O, g, q)
        free_buffer(padded)
        free_buffer(grad_t)
        free_buffer(work)
    return failed
