"""A numpy memory handler that starts every array's data on a 64-byte boundary.

numpy takes array memory from malloc, which aligns to 16 bytes, so an array's rows start at a random
one of four offsets within a cache line.  The kernels read whole 64-byte vectors; where the data is
not 64-byte aligned each of those loads touches two cache lines.  Measured on SimpleCNN's 6272 -> 10
head at batch 64, one thread: 59 us with the weight and input aligned, 78-84 us without; at batch 1
2.6 vs 4.3 us.  Which offset a process gets was luck, and benchmark runs of the same build differed
by that much.

`install()` makes this handler numpy's allocation policy for the current context (numpy keeps the
policy in a context variable; an array remembers the handler that allocated it, so arrays made
before or elsewhere are freed by their own).  Each block is over-allocated by 80 bytes: the raw
pointer and the size sit just before the aligned start.  calloc stays calloc, so large zeroed arrays
still come from untouched pages.
"""
from cpython.pycapsule cimport PyCapsule_New
from libc.string cimport memset, strcpy

cdef extern from *:
    """
    #include <stdint.h>
    #include <stdlib.h>
    #include <string.h>

    #define CNNCY_ALIGNMENT 64
    #define CNNCY_HEADER 16  /* the raw pointer and the requested size */

    static void* cnncy_aligned_block(char* raw, size_t size)
    {
        uintptr_t start;
        if (raw == NULL)
            return NULL;
        start = ((uintptr_t) raw + CNNCY_HEADER + CNNCY_ALIGNMENT - 1) & ~(uintptr_t) (CNNCY_ALIGNMENT - 1);
        ((void**) start)[-2] = raw;
        ((size_t*) start)[-1] = size;
        return (void*) start;
    }

    static void* cnncy_aligned_malloc(void* ctx, size_t size)
    {
        (void) ctx;
        if (size > SIZE_MAX - CNNCY_ALIGNMENT - CNNCY_HEADER)
            return NULL;
        return cnncy_aligned_block(malloc(size + CNNCY_ALIGNMENT + CNNCY_HEADER), size);
    }

    static void* cnncy_aligned_calloc(void* ctx, size_t count, size_t item_size)
    {
        size_t size;
        (void) ctx;
        if (item_size != 0 && count > (SIZE_MAX - CNNCY_ALIGNMENT - CNNCY_HEADER) / item_size)
            return NULL;
        size = count * item_size;
        return cnncy_aligned_block(calloc(1, size + CNNCY_ALIGNMENT + CNNCY_HEADER), size);
    }

    static void cnncy_aligned_free(void* ctx, void* block, size_t size)
    {
        (void) ctx; (void) size;
        if (block != NULL)
            free(((void**) block)[-2]);
    }

    static void* cnncy_aligned_realloc(void* ctx, void* block, size_t size)
    {
        void* moved;
        size_t old_size;
        if (block == NULL)
            return cnncy_aligned_malloc(ctx, size);
        moved = cnncy_aligned_malloc(ctx, size);
        if (moved == NULL)
            return NULL;  /* the old block stays valid, as realloc's does */
        old_size = ((size_t*) block)[-1];
        memcpy(moved, block, old_size < size ? old_size : size);
        cnncy_aligned_free(ctx, block, old_size);
        return moved;
    }
    """
    void* cnncy_aligned_malloc(void* ctx, size_t size) noexcept nogil
    void* cnncy_aligned_calloc(void* ctx, size_t count, size_t item_size) noexcept nogil
    void* cnncy_aligned_realloc(void* ctx, void* block, size_t size) noexcept nogil
    void cnncy_aligned_free(void* ctx, void* block, size_t size) noexcept nogil

cdef extern from "numpy/arrayobject.h":
    ctypedef struct PyDataMemAllocator:
        void* ctx
        void* (*malloc)(void* ctx, size_t size) noexcept nogil
        void* (*calloc)(void* ctx, size_t count, size_t item_size) noexcept nogil
        void* (*realloc)(void* ctx, void* block, size_t size) noexcept nogil
        void (*free)(void* ctx, void* block, size_t size) noexcept nogil
    ctypedef struct PyDataMem_Handler:
        char name[127]
        unsigned char version
        PyDataMemAllocator allocator
    object PyDataMem_SetHandler(object handler)
    int _import_array() except -1

_import_array()

HANDLER_NAME = "cnncy_aligned_64"
ALIGNMENT = 64

cdef PyDataMem_Handler handler
memset(handler.name, 0, sizeof(handler.name))
strcpy(handler.name, b"cnncy_aligned_64")
handler.version = 1
handler.allocator.ctx = NULL
handler.allocator.malloc = cnncy_aligned_malloc
handler.allocator.calloc = cnncy_aligned_calloc
handler.allocator.realloc = cnncy_aligned_realloc
handler.allocator.free = cnncy_aligned_free

# numpy holds the capsule while it is the policy; this reference keeps it alive past that too.
_capsule = PyCapsule_New(&handler, "mem_handler", NULL)


def install():
    """Make the aligned handler numpy's allocation policy in the current context."""
    PyDataMem_SetHandler(_capsule)
