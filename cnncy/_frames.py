"""Where a warning should point: the innermost frame outside cnncy.

Most of cnncy's Python layer is compiled with Cython (setup.py), and compiled functions have no
Python frames, so a fixed warnings stacklevel would count differently in a compiled and in a
pure-Python build.  This module itself is never compiled: it needs its own frame.
"""
import os
import sys

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def user_stacklevel():
    """The stacklevel for a warnings.warn call made by this function's caller that points at the
    innermost frame outside the cnncy package (the user's line), compiled or not."""
    frame = sys._getframe(1)  # the caller, or, if it is compiled, the innermost Python frame
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level
