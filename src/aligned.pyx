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

Freed blocks of 64 KiB to 32 MiB are kept (up to 32 blocks and 256 MiB; the oldest go first) and
handed to the next request of exactly their size, newest first.  A training step allocates the
same buffers in the same order every step, so each layer's output and gradient get the memory
they had the step before, which the same threads wrote in the same split (the kernels split the
batch the same way).  From glibc, a buffer could instead land on memory the other core had
written, and every cache line of it then moved between the cores: SimpleCNN at batch 64, two
threads, in a phase where this VM's two cores shared no cache: fused forward 122 -> 112 us, linear
forward 44 -> 37 us, step 511-519 -> 495-504 us (no change when they share one).  Larger blocks
go back to glibc, which returns them to the system as before (cnncy._memory); release_kept()
frees the kept blocks.
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

    #define CNNCY_KEEP_MIN_BYTES ((size_t) 64 << 10)
    #define CNNCY_KEEP_SLOTS 32
    #define CNNCY_KEEP_MAX_BYTES ((size_t) 256 << 20)  /* all kept blocks together */
    #define CNNCY_KEEP_MAX_BLOCK ((size_t) 32 << 20)   /* glibc's largest mmap threshold (cnncy._memory) */

    /* Freed blocks kept for the next request of the same size, newest last. */
    static void* cnncy_kept_block[CNNCY_KEEP_SLOTS];
    static size_t cnncy_kept_size[CNNCY_KEEP_SLOTS];
    static int cnncy_kept_count = 0;
    static size_t cnncy_kept_bytes = 0;
    static int cnncy_kept_lock = 0;

    static void cnncy_lock(void) { while (__atomic_exchange_n(&cnncy_kept_lock, 1, __ATOMIC_ACQUIRE)) {} }
    static void cnncy_unlock(void) { __atomic_store_n(&cnncy_kept_lock, 0, __ATOMIC_RELEASE); }

    static void cnncy_drop_kept(int i)
    {
        cnncy_kept_bytes -= cnncy_kept_size[i];
        for (; i + 1 < cnncy_kept_count; i++) {
            cnncy_kept_block[i] = cnncy_kept_block[i + 1];
            cnncy_kept_size[i] = cnncy_kept_size[i + 1];
        }
        cnncy_kept_count--;
    }

    static void* cnncy_take_kept(size_t size)
    {
        void* block = NULL;
        int i;
        if (size < CNNCY_KEEP_MIN_BYTES)
            return NULL;
        cnncy_lock();
        for (i = cnncy_kept_count - 1; i >= 0; i--) {
            if (cnncy_kept_size[i] == size) {
                block = cnncy_kept_block[i];
                cnncy_drop_kept(i);
                break;
            }
        }
        cnncy_unlock();
        return block;
    }

    static void cnncy_release_kept(void)
    {
        cnncy_lock();
        while (cnncy_kept_count > 0) {
            free(((void**) cnncy_kept_block[0])[-2]);
            cnncy_drop_kept(0);
        }
        cnncy_unlock();
    }

    static void* cnncy_aligned_malloc(void* ctx, size_t size)
    {
        void* block;
        (void) ctx;
        if (size > SIZE_MAX - CNNCY_ALIGNMENT - CNNCY_HEADER)
            return NULL;
        block = cnncy_take_kept(size);
        if (block != NULL)
            return block;
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
        (void) ctx;
        if (block == NULL)
            return;
        size = ((size_t*) block)[-1];
        if (size >= CNNCY_KEEP_MIN_BYTES && size <= CNNCY_KEEP_MAX_BLOCK) {
            cnncy_lock();
            while (cnncy_kept_count > 0 && (cnncy_kept_count == CNNCY_KEEP_SLOTS
                                            || cnncy_kept_bytes + size > CNNCY_KEEP_MAX_BYTES)) {
                free(((void**) cnncy_kept_block[0])[-2]);
                cnncy_drop_kept(0);
            }
            cnncy_kept_block[cnncy_kept_count] = block;
            cnncy_kept_size[cnncy_kept_count] = size;
            cnncy_kept_count++;
            cnncy_kept_bytes += size;
            cnncy_unlock();
            return;
        }
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
    void cnncy_release_kept() noexcept nogil

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


def release_kept():
    """Free the blocks kept for reuse."""
    cnncy_release_kept()
