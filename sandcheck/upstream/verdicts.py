"""An upstream spec's result judged against the runtime's declared deviations.

A runtime declares, in the catalog, the upstream specs it is documented not to support,
each with its source. A declared spec that fails is a *deviation* (reported as such, never
as a pass); an undeclared failure fails; a declared spec that passes is reported as passed
with a note, so the declaration can go. Specs are matched by their slug, so a declaration
may be written as the spec's name or as its check id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sandcheck.upstream.junit import Spec

STALE = "declared a deviation but passes: remove it from the catalog"


def slug(name: str) -> str:
    """``Security Context NamespaceOption runtime should support HostIpc is true`` ->
    ``security-context-namespaceoption-runtime-should-support-hostipc-is-true``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def check_id(suite: str, name: str) -> str:
    return f"{suite}.{slug(name)}"


@dataclass(frozen=True)
class Verdict:
    check_id: str
    spec: Spec
    status: str
    """passed, failed, skipped or deviation."""
    message: str
    declared: str | None = None
    """The source of the runtime's declaration for this spec, if any."""

    @property
    def stale(self) -> bool:
        """A declared deviation that passed: the list can shrink."""
        return self.declared is not None and self.status == "passed"


_LAST_BRACKETS = re.compile(r"\s*\[[^\[\]]*\]$")


def declared_source(spec: Spec, declared: Mapping[str, str], suite: str) -> str | None:
    """The declaration of ``spec``, written as its name or check id, with or without the
    last bracketed group of its name (ginkgo's label list: ``[sig-node, Conformance]``)."""
    wanted = {slug(key.removeprefix(f"{suite}.")): src for key, src in declared.items()}
    for name in (spec.name, _LAST_BRACKETS.sub("", spec.name)):
        if slug(name) in wanted:
            return wanted[slug(name)]
    return None


def judge(spec: Spec, declared: Mapping[str, str], suite: str) -> Verdict:
    source = declared_source(spec, declared, suite)
    cid = check_id(suite, spec.name)
    if spec.status == "failed":
        if source is not None:
            return Verdict(cid, spec, "deviation",
                           f"declared deviation ({source}): {spec.message}", source)
        return Verdict(cid, spec, "failed", spec.message)
    if spec.status == "passed" and source is not None:
        return Verdict(cid, spec, "passed", f"{STALE} ({source})", source)
    return Verdict(cid, spec, spec.status, spec.message, source)


def judge_all(specs: Iterable[Spec], declared: Mapping[str, str], suite: str,
              left_out: Mapping[str, str] | None = None,
              focus: str | None = None,
              skipped_as: str = "not run offline") -> list[Verdict]:
    """Verdicts of the specs that ran, plus the ones left out on purpose (``left_out``: a
    text of their names -> why; reported skipped, as ``skipped_as: why``, when ``focus``
    would have run them); specs a focus left out are not reported."""
    verdicts = []
    for spec in specs:
        if spec.suite_node:
            continue
        if spec.filtered:
            if focus is not None and not re.search(focus, spec.name):
                continue
            why = next((w for text, w in (left_out or {}).items() if text in spec.name), None)
            if why is not None:
                verdicts.append(Verdict(check_id(suite, spec.name), spec, "skipped",
                                        f"{skipped_as}: {why}"))
            continue
        verdicts.append(judge(spec, declared, suite))
    return verdicts
