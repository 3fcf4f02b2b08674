"""The architecture the design promises, checked on the source (AST, nothing imported):

- every module sits at the path its import names (``sandcheck.clusters.node`` is
  ``sandcheck/clusters/node.py``): the package list is found, not kept;
- imports between sandcheck's modules form no cycle, counting imports inside functions;
- imports run downward only, through the layers below, with no exception: the command
  line (``sandcheck.cli``) is the top of the package and the suites sit above it;
- suites and fixtures never probe a backend or a pod with ``hasattr``/``getattr``: they
  ask for a declared Capability;
- the README's backend table and ``--backend`` option list exactly the registry's backends.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Checkout folder -> the package it is: the package directory itself, and the suites,
# which a wheel ships as sandcheck.suites (setup.py says the same).
PACKAGES = {
    "sandcheck": "sandcheck",
    "suites": "sandcheck.suites",
}
LAYERS = {
    "sandcheck": 0,             # errors, the timeouts table and wait helper, progress
    "sandcheck.host": 1,        # processes, mounts, cgroups, memory, seccomp, tracing
    "sandcheck.catalog": 2,     # every per-runtime fact
    "sandcheck.judges": 2,      # escape preconditions and host surface, judged
    "sandcheck.provision": 3,   # pins, the Go build engine, apt, host preparation
    "sandcheck.oci": 4,         # OCI references, credentials, push, a loopback registry
    "sandcheck.containerd": 5,  # config model and patcher, daemon, verify, CRI
    "sandcheck.clusters": 6,    # the backend contract, registry and every backend
    "sandcheck.upstream": 7,    # critest and e2e runners against a backend
    "sandcheck.cleanup": 8,     # what any backend's dead run left behind
    "sandcheck.reports": 9,     # result model, writers, baseline, bundles
    "sandcheck.fixtures": 10,   # the pytest plugin and fixtures
    "sandcheck.cli": 11,        # the sandcheck command and certify
    "sandcheck.suites": 12,     # the checks
}
"""Lower layers never import higher ones; a module of none of these (a new top-level
module) counts as the lowest and may import only its peers there."""


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    path: Path
    line: int

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def module_files() -> dict[str, Path]:
    """Module name -> file, for every .py file of the package's folders."""
    found: dict[str, Path] = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _is_package(name: str, files: dict[str, Path]) -> bool:
    return files[name].name == "__init__.py"


def _known(name: str, files: dict[str, Path]) -> str | None:
    """``name`` or its closest enclosing known module (``a.b.func`` -> ``a.b``)."""
    while name:
        if name in files:
            return name
        name = name.rpartition(".")[0]
    return None


def _targets(node: ast.Import | ast.ImportFrom, source: str,
             files: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = source if _is_package(source, files) else source.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name`` imports mod.
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
            for alias in node.names]


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def collect_imports() -> list[Import]:
    """Every import of a sandcheck module, at module level or inside a function, plus the
    packages an import runs on the way (``import a.b.c`` runs ``a.b``'s __init__ first)."""
    files = module_files()
    edges: list[Import] = []
    for source, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        own = set(_ancestors(source))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for raw in _targets(node, source, files):
                target = _known(raw, files)
                if target is None:
                    continue
                for name in [*_ancestors(target), target]:
                    if name in files and name != source and name not in own:
                        edges.append(Import(source, name, path, node.lineno))
    return edges


def find_cycles(edges: list[Import]) -> list[list[Import]]:
    """One shortest cycle per strongly connected component (Tarjan), as its import edges."""
    graph: dict[str, dict[str, Import]] = {}
    for e in edges:
        graph.setdefault(e.source, {}).setdefault(e.target, e)
        graph.setdefault(e.target, {})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)

    cycles = []
    for component in components:
        members = set(component)
        start = component[0]
        # Breadth-first from start back to start, inside the component.
        paths: dict[str, list[Import]] = {start: []}
        queue = [start]
        cycle: list[Import] | None = None
        while queue and cycle is None:
            v = queue.pop(0)
            for w, e in sorted(graph[v].items()):
                if w == start:
                    cycle = [*paths[v], e]
                    break
                if w in members and w not in paths:
                    paths[w] = [*paths[v], e]
                    queue.append(w)
        cycles.append(cycle)
    return cycles


def show_cycle(cycle: list[Import]) -> str:
    return (" -> ".join([cycle[0].source, *(e.target for e in cycle)]) + "\n"
            + "\n".join(f"    {e.source} imports {e.target} at {e.where()}" for e in cycle))


def layer_of(module: str) -> str:
    return max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)


# -- the import graph ---------------------------------------------------------------------


def test_the_walk_sees_lazy_and_relative_imports():
    """The walker itself: a function-level import must count, or the checks below prove
    nothing about the command line's lazy imports."""
    edges = collect_imports()
    lazy = [e for e in edges if e.source == "sandcheck.cli.main"]
    assert any(e.target.startswith("sandcheck.reports.") for e in lazy), lazy
    src = "def f():\n    from sandcheck import errors\n"
    node = next(n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom))
    assert _targets(node, "sandcheck.cli.main", module_files()) == ["sandcheck.errors"]
    rel = ast.parse("from .base import Pod\nfrom .. import errors\n").body
    assert _targets(rel[0], "sandcheck.clusters.node", module_files()) == [
        "sandcheck.clusters.base"]
    assert _targets(rel[1], "sandcheck.clusters.node", module_files()) == [
        "sandcheck.errors"]


def test_the_cycle_finder_finds_cycles():
    here = Path(__file__)
    edges = [Import(a, b, here, n) for n, (a, b) in enumerate(
        [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e"), ("e", "d"), ("x", "a")])]
    shown = sorted(" -> ".join([c[0].source, *(e.target for e in c)])
                   for c in find_cycles(edges))
    assert shown == ["a -> b -> c -> a", "d -> e -> d"]
    assert find_cycles(edges[:2]) == []


def test_no_import_cycles():
    cycles = find_cycles(collect_imports())
    assert not cycles, f"{len(cycles)} import cycle(s):\n" + "\n".join(
        show_cycle(c) for c in cycles)


def test_imports_run_downward():
    """Every import goes to the same layer or a lower one; the command line is no
    exception (it sits on top)."""
    bad = []
    for e in collect_imports():
        src, dst = layer_of(e.source), layer_of(e.target)
        if LAYERS[dst] > LAYERS[src]:
            bad.append(f"  {e.source} ({src}) -> {e.target} ({dst}) at {e.where()}")
    assert not bad, "imports that run upward:\n" + "\n".join(bad)


def test_every_module_is_where_its_name_says():
    """No run-time path editing: the package has no __path__ of its own making and nothing
    edits sys.path, so a tool reading the checkout resolves every import to its file."""
    bad = []
    for path in [*ROOT.joinpath("sandcheck").rglob("*.py"), ROOT / "conftest.py",
                 *ROOT.joinpath("suites").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and (
                    (node.attr == "__path__")
                    or (node.attr == "path" and isinstance(node.value, ast.Name)
                        and node.value.id == "sys")):
                bad.append(f"  {path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not bad, "run-time path editing:\n" + "\n".join(bad)
    unresolved = [f"  {e.where()}: {e.target}" for e in collect_imports()
                  if e.target not in module_files()]
    assert not unresolved, "\n".join(unresolved)


# -- the stated rules: one table of timeouts, one wait helper, small modules ---------------

TABLE = ROOT / "sandcheck" / "timeouts.py"
MODULE_LINES_MAX = 500
"""A product module longer than this holds more than one concern: split it."""

TIMEOUT_KEYWORDS = re.compile(r"^(timeout|interval|grace|patience|window|delay|_request_timeout|"
                              r"timeout_seconds|\w+_timeout)$")
TIMEOUT_NAMES = re.compile(r"(SECONDS|TIMEOUT|PATIENCE|INTERVAL|GRACE|WAIT|POLL|DELAY)")
CLOCKS = {"monotonic", "time", "perf_counter", "monotonic_ns", "time_ns"}


def _literal_seconds(expr: ast.AST) -> bool:
    """A non-zero number written in the expression itself (``max(0.0, left)`` is fine)."""
    return any(isinstance(n, ast.Constant) and type(n.value) in (int, float) and n.value != 0
               for n in ast.walk(expr))


def _call_name(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _defaults(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[tuple[ast.arg, ast.expr]]:
    args = fn.args
    positional = args.args[len(args.args) - len(args.defaults):]
    return [*zip(positional, args.defaults, strict=True),
            *((a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
              if d is not None)]


def literal_timeouts(source: str, filename: str = "<src>") -> list[tuple[int, str]]:
    """Seconds written as numbers where a wait is bounded or paced: a timeout/interval
    argument or default, a sleep, wait_until's timeout, a module constant named so."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Call):
            found += [(node.lineno, f"{kw.arg}={ast.unparse(kw.value)}") for kw in node.keywords
                      if kw.arg and TIMEOUT_KEYWORDS.match(kw.arg)
                      and _literal_seconds(kw.value)]
            bound = {"sleep": 0, "wait_until": 1}.get(_call_name(node))
            if bound is not None and len(node.args) > bound \
                    and _literal_seconds(node.args[bound]):
                found.append((node.lineno, ast.unparse(node)[:80]))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found += [(node.lineno, f"{n.id} = {ast.unparse(node.value)}")
                      for t in targets for n in ast.walk(t)
                      if isinstance(n, ast.Name) and n.id.isupper()
                      and TIMEOUT_NAMES.search(n.id) and _literal_seconds(node.value)]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found += [(node.lineno, f"def {node.name}(... {a.arg}={ast.unparse(d)})")
                      for a, d in _defaults(node)
                      if TIMEOUT_KEYWORDS.match(a.arg) and _literal_seconds(d)]
    return sorted(set(found))


def _reads_clock(node: ast.AST) -> bool:
    """The clock is read in ``node`` itself, not in a function defined inside it."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        return False
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in CLOCKS and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "time"):
        return True
    return any(_reads_clock(child) for child in ast.iter_child_nodes(node))


def deadline_loops(source: str, filename: str = "<src>") -> list[tuple[int, str]]:
    """A while loop that reads the clock, or a deadline computed as clock + seconds."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.While) and any(
                _reads_clock(part) for part in [node.test, *node.body, *node.orelse]):
            found.append((node.lineno, "while loop reading the clock"))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and (
                _reads_clock(node.left) or _reads_clock(node.right)):
            found.append((node.lineno, f"deadline {ast.unparse(node)}"))
    return sorted(set(found))


def _checked_sources() -> list[Path]:
    """Product modules and the checks; the table itself is where the numbers belong."""
    return [p for p in [*sorted(ROOT.joinpath("sandcheck").rglob("*.py")),
                        *sorted(ROOT.joinpath("suites").rglob("*.py"))] if p != TABLE]


def test_the_timeout_finder_finds_literals():
    src = ("x = f(timeout=10)\ny = g(interval=0.5)\ntime.sleep(2)\nwait_until(p, 30, 'w')\n"
           "POLL_SECONDS = 0.1\ndef h(timeout=5): pass\nok = f(timeout=TIMEOUTS.exec)\n"
           "fine = q(timeout=max(0.0, left))\nduration = r(duration_seconds=1.5)\n")
    assert [line for line, _ in literal_timeouts(src)] == [1, 2, 3, 4, 5, 6]


def test_the_loop_finder_finds_deadline_loops():
    src = ("deadline = time.monotonic() + 5\n"
           "while True:\n    if time.monotonic() > deadline: break\n"
           "while x:\n    x = step()\n"
           "while y:\n    def inner(): return time.monotonic()\n    y = inner\n"
           "start = time.monotonic()\n")
    assert [line for line, _ in deadline_loops(src)] == [1, 2]


def test_every_timeout_is_a_field_of_the_table():
    bad = [f"  {p.relative_to(ROOT)}:{line}: {what}" for p in _checked_sources()
           for line, what in literal_timeouts(p.read_text(), str(p))]
    assert not bad, ("literal timeouts or intervals; name them in sandcheck/timeouts.py "
                     "(TIMEOUTS) and use the field:\n" + "\n".join(bad))


def test_every_deadline_loop_is_the_wait_helper():
    bad = [f"  {p.relative_to(ROOT)}:{line}: {what}" for p in _checked_sources()
           for line, what in deadline_loops(p.read_text(), str(p))]
    assert not bad, ("hand-written deadline loops; use sandcheck.timeouts.wait_until with a "
                     "probe:\n" + "\n".join(bad))


def test_no_product_module_is_too_long():
    long = [f"  {p.relative_to(ROOT)}: {n} lines"
            for p in sorted(ROOT.joinpath("sandcheck").rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MODULE_LINES_MAX]
    assert not long, (f"modules over {MODULE_LINES_MAX} lines (split them by concern):\n"
                      + "\n".join(long))


# -- no probing of backends -----------------------------------------------------------------

BACKENDISH = re.compile(r"^(backend|be|kube|cluster|node|pod|pods|probe_pod|cri|"
                        r"\w+_backend|\w+_pod|\w+_node)$")


def _terminal_name(expr: ast.expr) -> str | None:
    """``backend`` for ``backend``, ``self.backend``, ``request.backend``."""
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        return expr.attr
    return None


def probes_in(source: str, filename: str = "<src>") -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("hasattr", "getattr") and node.args):
            name = _terminal_name(node.args[0])
            if name is not None and BACKENDISH.match(name):
                found.append((node.lineno, ast.unparse(node)))
    return sorted(found)


def test_the_probe_finder_finds_probes():
    src = ("hasattr(backend, 'x')\ngetattr(self.backend, 'y', None)\ngetattr(pod, 'z')\n"
           "getattr(kube_backend, 'w')\ngetattr(item, 'callspec', None)\nhasattr(runtime, 'n')\n")
    assert [line for line, _ in probes_in(src)] == [1, 2, 3, 4]


@pytest.mark.parametrize("folder", ["suites", "fixtures"])
def test_no_attribute_probing_of_backends(folder):
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, call in probes_in(path.read_text(), str(path)):
            bad.append(f"  {path.relative_to(ROOT)}:{line}: {call}")
    assert not bad, ("backends and pods probed for attributes; declare it in the contract "
                     "(sandcheck/clusters/base.py) and ask with require(backend, Capability):\n"
                     + "\n".join(bad))


# -- the README lists the registry ------------------------------------------------------------


def _readme_backend_rows(readme: str) -> dict[str, str]:
    section = readme.split("\n## Backends", 1)
    assert len(section) == 2, "README.md has no '## Backends' section"
    body = section[1].split("\n## ", 1)[0]
    rows = {}
    for line in body.splitlines():
        m = re.match(r"^\|\s*`([\w-]+)`", line)
        if m:
            rows[m.group(1)] = line
    return rows


def test_readme_lists_every_registry_backend():
    from sandcheck.clusters import registry

    readme = (ROOT / "README.md").read_text()
    rows = _readme_backend_rows(readme)
    assert set(rows) == set(registry.BACKENDS), (
        f"README's backend table lists {sorted(rows)}, the registry has "
        f"{sorted(registry.BACKENDS)}")
    for name, entry in registry.BACKENDS.items():
        for opt in entry.options:
            assert f"`{opt.flag}`" in rows[name], f"README row of {name} lacks {opt.flag}"
    m = re.search(r"`--backend ([\w|\\-]+)`", readme)
    assert m, "README's option table has no `--backend a|b|c` row"
    listed = set(m.group(1).replace("\\", "").split("|"))
    assert listed == set(registry.BACKENDS), f"--backend row lists {sorted(listed)}"
    for opt in registry.options():
        assert re.search(rf"\|\s*`{re.escape(opt.flag)}[ `]", readme), (
            f"README's option table lacks {opt.flag}")


def test_every_registered_backend_keeps_the_contract(tmp_path):
    """Made from the registry with its options (nothing starts), each backend has every
    member of the Backend protocol, and exactly the accessors its capabilities promise."""
    from sandcheck.catalog import Catalog
    from sandcheck.clusters import registry
    from sandcheck.clusters.base import Backend, BackendSettings, Capability

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    options = {"kubeconfig": kubeconfig}
    runtimes = Catalog.load().select("runc")
    for name, entry in registry.BACKENDS.items():
        backend = entry.open(BackendSettings(runtimes, f"contract-{name}", options={
            opt.dest: options.get(opt.dest) for opt in entry.options}))
        assert isinstance(backend, Backend), f"{name} lacks a member of the Backend protocol"
        assert backend.level in ("CRI", "Kubernetes", "Docker")
        for capability, accessor in ((Capability.CRI_DIRECT, "cri_node"),
                                     (Capability.DOCKER_CLI, "docker_engine")):
            promised = capability in backend.capabilities
            assert promised == callable(getattr(backend, accessor, None)), (
                f"{name}: {capability.name} {'promised' if promised else 'not promised'} "
                f"but {accessor} is {'missing' if promised else 'there'}")


def test_every_code_folder_is_a_package():
    """setup.py finds the packages: a folder of modules without an __init__.py would be
    missing from the wheel and fail only for its users."""
    bare = sorted(str(d.relative_to(ROOT)) for folder in PACKAGES
                  for d in [ROOT / folder, *(ROOT / folder).rglob("*")]
                  if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))
                  and not (d / "__init__.py").is_file())
    assert not bare, f"folders of modules without __init__.py: {bare}"
