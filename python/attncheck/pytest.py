"""attncheck under pytest: one line declares a conformance test of a backend,

    test_my_kernel = attncheck.pytest.conformance(MyKernel(), profile="quick")

and pytest collects one item per property x dtype (`test_my_kernel::reference-agreement[f32]`),
so -k, -x, --junitxml and pytest-xdist work as for any test. Each item is one unit of
`attncheck run`: a failure's message is the shrunk case, its verdict and the reproduce line. The
plugin (attncheck.pytest_plugin, registered through the pytest11 entry point) adds
--attncheck-seed and --attncheck-profile, which override what the declaration says.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable, Optional, Sequence, Union

import attncheck

__all__ = ["Conformance", "conformance"]


class Conformance:
    """What `conformance()` returns: the backend and run options of one conformance test."""

    def __init__(self, backend: Any, profile: str = "quick", properties: Union[None, str, Iterable[str]] = None,
                 dtypes: Union[None, str, Sequence[str]] = None, seed: Optional[int] = None,
                 expect: Optional[Union[str, os.PathLike]] = None, **run_options: Any):
        self.backend = backend
        self.profile = profile
        self.properties = properties if properties is None or isinstance(properties, str) else list(properties)
        self.dtypes = attncheck._dtype_list(dtypes)
        self.seed = seed
        self.expect = expect
        self.run_options = run_options

    def units(self) -> list:
        """(property, dtype) in the order `attncheck run` takes them."""
        regex = attncheck._property_regex(self.properties)
        takes = {p[0]: p[5] for p in attncheck.properties()}
        chosen = [n for n in takes if not regex or re.search(regex, n)]
        if not chosen:
            raise ValueError(f"properties {self.properties!r} select none of the {len(takes)} properties")
        # A property runs on the input dtypes it takes (the fp8 family on e4m3 and e5m2 only), as
        # `attncheck run` plans it.
        units = [(name, dtype) for name in chosen for dtype in self.dtypes if dtype in takes[name]]
        if not units:
            raise ValueError(f"dtypes {self.dtypes!r}: none is an input dtype of the chosen properties "
                             f"(they take {sorted(set().union(*(takes[n] for n in chosen)))})")
        return units

    def run_unit(self, property: str, dtype: str, profile: Optional[str] = None, seed: Optional[int] = None):
        return attncheck.run(self.backend, profile=profile or self.profile, properties=[property], dtypes=[dtype],
                             seed=seed if seed is not None else self.seed, expect=self.expect, **self.run_options)


def conformance(backend: Any, profile: str = "quick", properties: Union[None, str, Iterable[str]] = None,
                dtypes: Union[None, str, Sequence[str]] = None, seed: Optional[int] = None,
                expect: Optional[Union[str, os.PathLike]] = None, **run_options: Any) -> Conformance:
    """Declares a conformance test: assign the result to a module-level name starting with `test`.

    The arguments are attncheck.run's; `expect` gates on an expectation file (an expected failure
    is reported as xfail, anything else that differs from the file fails)."""
    return Conformance(backend, profile, properties, dtypes, seed, expect, **run_options)
