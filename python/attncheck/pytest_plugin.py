"""The pytest plugin behind attncheck.pytest.conformance (entry point pytest11 "attncheck")."""

from __future__ import annotations

import pytest

import attncheck
from attncheck.pytest import Conformance


def pytest_addoption(parser):
    group = parser.getgroup("attncheck")
    group.addoption("--attncheck-seed", type=int, default=None,
                    help="seed of every conformance test (default: ATTNCHECK_SEED, else 24301, as the CLI)")
    group.addoption("--attncheck-profile", default=None, choices=["quick", "standard", "exhaustive"],
                    help="suite profile of every conformance test, replacing the one it declares")


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector, name, obj):
    if isinstance(obj, Conformance) and collector.funcnamefilter(name):
        return ConformanceCollector.from_parent(collector, name=name, conformance=obj)
    return None


class ConformanceCollector(pytest.Collector):
    def __init__(self, *, conformance: Conformance, **kwargs):
        super().__init__(**kwargs)
        self.conformance = conformance

    def collect(self):
        for property, dtype in self.conformance.units():
            yield ConformanceItem.from_parent(self, name=f"{property}[{dtype}]", property=property, dtype=dtype)


class ConformanceFailure(Exception):
    """A unit that failed (or differs from the expectation file); the message is the report's."""


class ConformanceItem(pytest.Item):
    def __init__(self, *, property: str, dtype: str, **kwargs):
        super().__init__(**kwargs)
        self.property = property
        self.dtype = dtype
        self.user_properties.append(("attncheck_property", property))
        self.user_properties.append(("attncheck_dtype", dtype))

    def runtest(self):
        config = self.config
        report = self.parent.conformance.run_unit(self.property, self.dtype,
                                                  profile=config.getoption("attncheck_profile"),
                                                  seed=config.getoption("attncheck_seed"))
        unit = report.unit(self.property, self.dtype)
        if report.expectations is not None:
            if not report.expectations.ok:
                lines = list(report.expectations.mismatches)
                if unit.status == "failed":
                    lines.append(report.describe_failure(unit))
                raise ConformanceFailure("\n".join(lines))
            if unit.status == "failed":
                pytest.xfail(f"expected failure: {unit.message.splitlines()[0] if unit.message else ''}")
        if unit.status == "failed":
            raise ConformanceFailure(report.describe_failure(unit))
        if unit.status == "skipped":
            pytest.skip(unit.message or "the backend declined every case")

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, ConformanceFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, f"{self.parent.name}::{self.name}"
