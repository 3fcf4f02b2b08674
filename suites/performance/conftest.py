"""What the performance suite shares: it runs alone, one set of options, and one pod
starter (sandcheck/fixtures/bench.py) that times each start the same way in every benchmark."""

from __future__ import annotations

import pytest

from sandcheck.catalog import Runtime
from sandcheck.clusters.base import Backend
from sandcheck.fixtures.bench import Bench
from sandcheck.fixtures.perfoptions import PerfOptions, refuse_bad_run
from sandcheck.fixtures.plugin import progress_of
from sandcheck.fixtures.pods import require_runtime
from sandcheck.fixtures.soakplan import SoakPlan, plan_from
from sandcheck.host.workdir import concurrent_runs
from sandcheck.progress import Progress

_WARNED_KEY = pytest.StashKey[set]()


def pytest_configure(config: pytest.Config) -> None:
    refuse_bad_run(config)
    plan_from(config)  # a bad --soak ends the run here


@pytest.fixture(scope="session")
def soak_plan(request: pytest.FixtureRequest) -> SoakPlan | None:
    return plan_from(request.config)


@pytest.fixture(scope="session")
def perf_options(request: pytest.FixtureRequest) -> PerfOptions:
    return PerfOptions.from_config(request.config)


@pytest.fixture(scope="session")
def progress(request: pytest.FixtureRequest) -> Progress:
    """One short line on the terminal per runtime and phase."""
    say = progress_of(request.config)
    return lambda line: say(f"[performance] {line}")


@pytest.fixture
def bench(runtime: Runtime, backend: Backend, perf_options: PerfOptions,
          request: pytest.FixtureRequest, evidence, progress: Progress) -> Bench:
    """The pod starter of one benchmark; the load of other runs on this machine is
    recorded, since it is in the numbers."""
    require_runtime(runtime, backend)
    others = concurrent_runs()
    if others:
        evidence.add("other sandcheck runs were active on this machine when this benchmark "
                     "began: their load is in these numbers", others)
        warned = request.config.stash.setdefault(_WARNED_KEY, set())
        if not set(others) <= warned:
            warned.update(others)
            progress(f"warning: other sandcheck runs are active on this machine and disturb "
                     f"the numbers: {', '.join(others)}")
    b = Bench(backend, perf_options)
    request.addfinalizer(b.close)
    return b
