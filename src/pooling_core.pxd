"""Per-plane max-pooling cores, shared by cnncy._pooling and fused conv layers.

A plane is one (n, c) slice of an NCHW tensor: `height * width` contiguous
values.  Window taps follow PyTorch's CPU kernel exactly: taps are visited in
row-major order, a tap wins when `value > best or isnan(value)` (so the first
maximum wins ties and a NaN wins over everything), and padding acts as -inf.
The Python layer guarantees every window holds at least one real tap.
"""
from cython cimport floating
from libc.math cimport INFINITY
from libc.stdint cimport int64_t


ctypedef struct PoolGeometry:
    Py_ssize_t height
    Py_ssize_t width
    Py_ssize_t out_height
    Py_ssize_t out_width
    Py_ssize_t kernel_h
    Py_ssize_t kernel_w
    Py_ssize_t stride_h
    Py_ssize_t stride_w
    Py_ssize_t pad_h
    Py_ssize_t pad_w
    Py_ssize_t dilation_h
    Py_ssize_t dilation_w


cdef inline void tap_range(Py_ssize_t start, Py_ssize_t kernel, Py_ssize_t dilation,
                           Py_ssize_t size, Py_ssize_t* first, Py_ssize_t* last) noexcept nogil:
    """The taps m in [first, last) of a window starting at `start` that land in [0, size).

    Stepping (at most `kernel` steps) is cheaper here than an integer division.
    """
    first[0] = 0
    while start + first[0] * dilation < 0:
        first[0] += 1
    last[0] = kernel
    while last[0] > first[0] and start + (last[0] - 1) * dilation >= size:
        last[0] -= 1


cdef inline void interior_columns(const PoolGeometry* g, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """Output columns [lo, hi) whose windows lie entirely inside the input's width."""
    cdef Py_ssize_t last_start = g.width - 1 - (g.kernel_w - 1) * g.dilation_w + g.pad_w
    lo[0] = min((g.pad_w + g.stride_w - 1) // g.stride_w, g.out_width)
    hi[0] = min(last_start // g.stride_w + 1, g.out_width) if last_start >= 0 else 0
    hi[0] = max(hi[0], lo[0])


cdef enum:
    # Shorter runs of interior outputs go one window at a time: a vectorised sweep
    # has a set-up cost per tap that only pays off over a full vector of outputs.
    SWEEP_MIN = 8


cdef inline void max_sweep(const floating* x, floating* out_row, int64_t* argmax_row,
                           Py_ssize_t row_start, Py_ssize_t row_first, Py_ssize_t row_last,
                           Py_ssize_t col_lo, Py_ssize_t col_hi, const PoolGeometry* g) noexcept nogil:
    """Outputs [col_lo, col_hi) of one output row; their windows lie inside the width.

    The running maxima live in the output row and each tap sweeps the whole
    run, so the innermost loop goes across output columns and vectorises,
    while every output still sees its taps in row-major order.
    """
    cdef Py_ssize_t ow, mh, mw, base, index
    # Locals, not g's fields: the argmax stores could alias g for all the compiler knows.
    cdef Py_ssize_t width = g.width, stride_w = g.stride_w
    cdef Py_ssize_t dilation_h = g.dilation_h, dilation_w = g.dilation_w
    cdef Py_ssize_t first_tap = (row_start + row_first * dilation_h) * width - g.pad_w
    cdef floating value
    cdef bint take
    for ow in range(col_lo, col_hi):
        out_row[ow] = -INFINITY
        argmax_row[ow] = first_tap + ow * stride_w
    for mh in range(row_first, row_last):
        for mw in range(g.kernel_w):
            base = (row_start + mh * dilation_h) * width + mw * dilation_w - g.pad_w
            for ow in range(col_lo, col_hi):
                index = base + ow * stride_w
                value = x[index]
                take = (value > out_row[ow]) | (value != value)
                out_row[ow] = value if take else out_row[ow]
                argmax_row[ow] = index if take else argmax_row[ow]


cdef inline void max_window(const floating* x, floating* out, int64_t* argmax,
                            Py_ssize_t row_start, Py_ssize_t row_first, Py_ssize_t row_last,
                            Py_ssize_t col_start, const PoolGeometry* g) noexcept nogil:
    """One output, its window possibly hanging over the padding; branch-free.

    Random data makes `take` unpredictable, so instead of selecting the best
    value under `take` this keeps a NaN-ignoring running maximum (a single
    max instruction) next to a NaN flag: once a NaN is seen only a later NaN
    can move the index, exactly as with torch's `value > best or isnan(value)`.
    The output is then read back through the winning index.
    """
    cdef Py_ssize_t col_first, col_last, mh, mw, index, row
    cdef Py_ssize_t best_index
    cdef floating best = -INFINITY
    cdef floating value
    cdef bint take, is_nan, nan_seen = False
    tap_range(col_start, g.kernel_w, g.dilation_w, g.width, &col_first, &col_last)
    best_index = (row_start + row_first * g.dilation_h) * g.width + col_start + col_first * g.dilation_w
    for mh in range(row_first, row_last):
        row = (row_start + mh * g.dilation_h) * g.width + col_start
        for mw in range(col_first, col_last):
            index = row + mw * g.dilation_w
            value = x[index]
            is_nan = value != value
            take = ((value > best) & (not nan_seen)) | is_nan
            nan_seen = nan_seen | is_nan
            best = value if value > best else best
            best_index = index if take else best_index
    out[0] = x[best_index]
    argmax[0] = best_index


cdef inline bint is_plain_2x2(const PoolGeometry* g) noexcept nogil:
    """The usual 2x2 pool: stride 2, no padding or dilation, every window inside the plane."""
    return (g.kernel_h == 2 and g.kernel_w == 2 and g.stride_h == 2 and g.stride_w == 2
            and g.pad_h == 0 and g.pad_w == 0 and g.dilation_h == 1 and g.dilation_w == 1
            and 2 * g.out_height <= g.height and 2 * g.out_width <= g.width)


cdef extern from "pool_blocks.h":
    void max_pool2x2_plane_f32(const float* x, Py_ssize_t width, Py_ssize_t out_height, Py_ssize_t out_width,
                               float* out, int64_t* argmax) noexcept nogil
    void max_pool2x2_plane_f64(const double* x, Py_ssize_t width, Py_ssize_t out_height, Py_ssize_t out_width,
                               double* out, int64_t* argmax) noexcept nogil
    void max_unpool2x2_plane_f32(const float* grad_out, const int64_t* argmax, float* grad_x, Py_ssize_t height,
                                 Py_ssize_t width, Py_ssize_t out_height, Py_ssize_t out_width) noexcept nogil
    void max_unpool2x2_plane_f64(const double* grad_out, const int64_t* argmax, double* grad_x,
                                 Py_ssize_t height, Py_ssize_t width, Py_ssize_t out_height,
                                 Py_ssize_t out_width) noexcept nogil


cdef inline bint vector_2x2(const PoolGeometry* g) noexcept nogil:
    """is_plain_2x2, on a plane small enough for the vector blocks' 32-bit offsets."""
    return is_plain_2x2(g) and g.height * g.width < (1 << 30)


cdef inline void max_pool2d_plane(const floating* x, floating* out, int64_t* argmax,
                                  const PoolGeometry* g) noexcept nogil:
    """Max-pool one plane: out and argmax are out_height * out_width, argmax = h * width + w."""
    cdef Py_ssize_t oh, ow, row_start, row_first, row_last, col_lo, col_hi
    cdef floating* out_row
    cdef int64_t* argmax_row
    if vector_2x2(g):  # pool_blocks.h
        if floating is float:
            max_pool2x2_plane_f32(x, g.width, g.out_height, g.out_width, out, argmax)
        else:
            max_pool2x2_plane_f64(x, g.width, g.out_height, g.out_width, out, argmax)
        return
    interior_columns(g, &col_lo, &col_hi)
    for oh in range(g.out_height):
        row_start = oh * g.stride_h - g.pad_h
        tap_range(row_start, g.kernel_h, g.dilation_h, g.height, &row_first, &row_last)
        out_row = out + oh * g.out_width
        argmax_row = argmax + oh * g.out_width
        for ow in range(col_lo):
            max_window(x, out_row + ow, argmax_row + ow, row_start, row_first, row_last,
                       ow * g.stride_w - g.pad_w, g)
        if col_hi - col_lo >= SWEEP_MIN:
            max_sweep(x, out_row, argmax_row, row_start, row_first, row_last, col_lo, col_hi, g)
        else:
            for ow in range(col_lo, col_hi):
                max_window(x, out_row + ow, argmax_row + ow, row_start, row_first, row_last,
                           ow * g.stride_w - g.pad_w, g)
        for ow in range(col_hi, g.out_width):
            max_window(x, out_row + ow, argmax_row + ow, row_start, row_first, row_last,
                       ow * g.stride_w - g.pad_w, g)


cdef inline void max_pool2d_backward_plane(const floating* grad_out, const int64_t* argmax,
                                           floating* grad_x, Py_ssize_t in_size,
                                           Py_ssize_t out_size) noexcept nogil:
    """Zero one input-gradient plane, then scatter-add in output order (torch's order)."""
    cdef Py_ssize_t i
    for i in range(in_size):
        grad_x[i] = 0
    for i in range(out_size):
        grad_x[argmax[i]] += grad_out[i]
