/* One element type's blocks for softmax_blocks.h (REAL, NAME and the vector helpers come from
 * simd.h).  Do not include directly.
 *
 * float32: exp(t) of a whole vector, Cephes' expf (range reduction by ln 2 in two parts, a
 * degree-5 polynomial; within 1 ulp of exp on 2.2M points over [-110, 0], denormal results within
 * 0.75 units of 2^-149), with exp(-inf) = 0, exp(NaN) = NaN, overflow to +inf and gradual
 * underflow through the denormals.  float64 stays with libm's
 * exp, lane by lane: the float64 results are those of the scalar loops these blocks replace. */

static inline NAME(vec) NAME(exp_lanes)(NAME(vec) t)
{
    const int lanes = CNNCY_BLOCK_BYTES / sizeof(REAL);
    NAME(vec) result;
    if (sizeof(REAL) == sizeof(double)) {
        for (int j = 0; j < lanes; j++)
            result[j] = exp(t[j]);
        return result;
    }
    /* Clamped so that n below is within [-150, 128]: past either end the result is 0 or +inf
     * anyway.  A NaN fails both comparisons, and is put back at the end. */
    NAME(vec) clamped = NAME(select)(t < -104.0f, NAME(splat)(-104.0f), t);
    clamped = NAME(select)(clamped > 89.0f, NAME(splat)(89.0f), clamped);
    /* n = round(t / ln 2), by the 1.5 * 2^23 trick (exact for |x| < 2^22; no -ffast-math here). */
    NAME(vec) n = (clamped * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    NAME(vec) r = clamped - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    NAME(vec) p = NAME(splat)(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    /* p * 2^n as p * 2^half * 2^(n - half): both factors are normal floats, and the first product
     * is exact, so a denormal result is rounded once. */
    NAME(mask) whole = __builtin_convertvector(n, NAME(mask));
    NAME(mask) half = whole >> 1;
    NAME(vec) first = (NAME(vec)) ((half + 127) << 23);
    NAME(vec) second = (NAME(vec)) ((whole - half + 127) << 23);
    result = p * first * second;
    return NAME(select)(t != t, t, result);
}

/* out[j] = exp(x[j] - shift) for j < n, unless out is NULL (out may be x); returns their sum,
 * added one j after another in order. */
static inline REAL NAME(exp_shifted)(const REAL* x, REAL shift, REAL* out, ptrdiff_t n)
{
    const int lanes = CNNCY_BLOCK_BYTES / sizeof(REAL);
    REAL total = 0;
    for (ptrdiff_t j = 0; j < n; j += lanes) {
        int width = n - j < lanes ? (int) (n - j) : lanes;
        NAME(vec) v = width == lanes ? NAME(load)(x + j) : NAME(load_first)(x + j, width);
        NAME(vec) e = NAME(exp_lanes)(v - shift);
        for (int k = 0; k < width; k++)
            total = total + e[k];
        if (out == NULL)
            continue;
        if (width == lanes)
            NAME(store)(out + j, e);
        else
            NAME(store_first)(out + j, e, width);
    }
    return total;
}

/* out[j] = base[j] - exp(x[j]) * scale for j < n, or exp(x[j]) * scale without base (NULL).
 * out may be x or base. */
static inline void NAME(exp_scaled)(const REAL* base, const REAL* x, REAL scale, REAL* out, ptrdiff_t n)
{
    const int lanes = CNNCY_BLOCK_BYTES / sizeof(REAL);
    for (ptrdiff_t j = 0; j < n; j += lanes) {
        int width = n - j < lanes ? (int) (n - j) : lanes;
        NAME(vec) v = width == lanes ? NAME(load)(x + j) : NAME(load_first)(x + j, width);
        NAME(vec) e = NAME(exp_lanes)(v) * scale;
        if (base != NULL)
            e = (width == lanes ? NAME(load)(base + j) : NAME(load_first)(base + j, width)) - e;
        if (width == lanes)
            NAME(store)(out + j, e);
        else
            NAME(store_first)(out + j, e, width);
    }
}
