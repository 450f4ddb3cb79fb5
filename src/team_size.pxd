"""How many threads a kernel of the pooling / activation / loss families runs with."""

cdef enum:
    # Below this much work (window taps, elements) a parallel region costs more than it saves.
    PARALLEL_MIN_WORK = 1 << 15


cdef inline int team_size(Py_ssize_t tasks, Py_ssize_t work, int num_threads) noexcept nogil:
    """num_threads for enough work split into at least two tasks, else 1."""
    if work < PARALLEL_MIN_WORK or tasks < 2:
        return 1
    return num_threads
