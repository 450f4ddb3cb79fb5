/* One element type's 64-byte vector and its helpers, for simd.h, which defines REAL (float or double),
 * MASK (the signed integer of the same width), NAME (appends _f32 or _f64) and, with AVX-512,
 * STORE_FIRST, LOAD_FIRST, STORE_INT8, LOAD_INT8 and MAX_LATER.  Do not include directly. */

typedef REAL NAME(vec) __attribute__((vector_size(CNNCY_BLOCK_BYTES), aligned(sizeof(REAL)), may_alias));
typedef MASK NAME(mask) __attribute__((vector_size(CNNCY_BLOCK_BYTES), aligned(sizeof(REAL)), may_alias));

static inline NAME(vec) NAME(load)(const REAL* p) { return *(const NAME(vec)*) p; }
static inline void NAME(store)(REAL* p, NAME(vec) v) { *(NAME(vec)*) p = v; }
/* Store the first `count` lanes of v. */
static inline void NAME(store_first)(REAL* p, NAME(vec) v, int count)
{
#ifdef STORE_FIRST
    STORE_FIRST(p, v, count);
#else
    for (int j = 0; j < count; j++)
        p[j] = v[j];
#endif
}

/* The first `count` lanes of p, zeros after. */
static inline NAME(vec) NAME(load_first)(const REAL* p, int count)
{
#ifdef LOAD_FIRST
    return LOAD_FIRST(p, count);
#else
    NAME(vec) v = {0};
    for (int j = 0; j < count; j++)
        v[j] = p[j];
    return v;
#endif
}

/* One int8 per lane, widened. */
static inline NAME(mask) NAME(load_int8)(const signed char* p)
{
#ifdef LOAD_INT8
    return LOAD_INT8(p);
#else
    NAME(mask) m;
    for (int j = 0; j < (int) (CNNCY_BLOCK_BYTES / sizeof(REAL)); j++)
        m[j] = p[j];
    return m;
#endif
}

/* Store every lane of m (small integers) as an int8. */
static inline void NAME(store_int8)(signed char* p, NAME(mask) m)
{
#ifdef STORE_INT8
    STORE_INT8(p, m);
#else
    for (int j = 0; j < (int) (CNNCY_BLOCK_BYTES / sizeof(REAL)); j++)
        p[j] = (signed char) m[j];
#endif
}

static inline NAME(vec) NAME(splat)(REAL x) { return (NAME(vec)){0} + x; }
static inline NAME(vec) NAME(select)(NAME(mask) take, NAME(vec) a, NAME(vec) b)
{
    return (NAME(vec)) (((NAME(mask)) a & take) | ((NAME(mask)) b & ~take));
}

/* later > earlier ? later : earlier, lane by lane: the first of equal values (signed zeros
 * included) survives, as in torch's max-pool, but a NaN in `earlier` does not (x86's max
 * instruction, which gcc does not make from the bitwise select). */
static inline NAME(vec) NAME(max_later)(NAME(vec) later, NAME(vec) earlier)
{
#ifdef MAX_LATER
    return MAX_LATER(later, earlier);
#else
    return NAME(select)(later > earlier, later, earlier);
#endif
}

/* The sum of v's lanes, pairwise in a fixed order. */
static inline REAL NAME(lane_sum)(NAME(vec) v)
{
    REAL lanes[CNNCY_BLOCK_BYTES / sizeof(REAL)];
    NAME(store)(lanes, v);
    for (int half = (int) (CNNCY_BLOCK_BYTES / sizeof(REAL)) / 2; half > 0; half /= 2)
        for (int j = 0; j < half; j++)
            lanes[j] += lanes[j + half];
    return lanes[0];
}
