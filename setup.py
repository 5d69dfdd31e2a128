"""
The one thing pyproject.toml cannot say: the optional C extension relay._splice (the splice's thread).

It is optional: where it does not build (no compiler, not Linux), the install goes on without it and the
gateway relays in Python (relay.hybrid.native says which).
"""

import sys

from setuptools import Extension, setup

extensions = []
if sys.platform.startswith("linux"):
    extensions.append(
        Extension(
            "relay._splice",
            sources=[
                "relay/_splice.c",
                "relay/_splice_codec.c",
                "relay/_splice_frames.c",
                "relay/_splice_pump.c",
            ],
            depends=["relay/_splice_codec.h", "relay/_splice_frames.h", "relay/_splice_pump.h"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            optional=True,
        )
    )

setup(ext_modules=extensions)
