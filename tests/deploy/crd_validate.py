"""Validate ServiceMonitor and PrometheusRule documents against the
prometheus-operator CRD schemas, as packaged in the PyPI package
cloudcoil-models-prometheus-operator (pydantic models generated from the
CRDs' openAPIV3Schema: types, required fields, enums, patterns).

Runs in its own venv (tests/deploy/test_kubernetes.py makes it), because the
package's dependency `cloudcoil` registers a pytest plugin that must not load
into the project's test run. Input: JSON list of documents on stdin. Output:
JSON list of problems (empty: all valid). Validation is strict: JSON types
are not coerced, and a field the schema does not know is a problem (the API
server would prune it, or refuse it under kubectl's strict field validation).
"""

import json
import sys

from cloudcoil.models.prometheus_operator import v1

KINDS = {"ServiceMonitor": v1.ServiceMonitor, "PrometheusRule": v1.PrometheusRule}


def unknown_fields(given, kept, where=""):
    out = []
    if isinstance(given, dict):
        kept = kept if isinstance(kept, dict) else {}
        for k, v in given.items():
            if k not in kept:
                out.append(f"{where}.{k}: unknown field")
            else:
                out += unknown_fields(v, kept[k], f"{where}.{k}")
    elif isinstance(given, list) and isinstance(kept, list):
        for i, (g, k) in enumerate(zip(given, kept)):
            out += unknown_fields(g, k, f"{where}[{i}]")
    return out


def main():
    problems = []
    for doc in json.load(sys.stdin):
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        model = KINDS.get(doc.get("kind"))
        if model is None:
            problems.append(f"{name}: not a kind this validator knows")
            continue
        try:
            obj = model.model_validate_json(json.dumps(doc), strict=True)
        except Exception as e:  # pydantic.ValidationError
            problems.append(f"{name}: {e}")
            continue
        kept = obj.model_dump(mode="json", by_alias=True, exclude_unset=True)
        problems += [f"{name}: {p}" for p in unknown_fields(doc, kept)]
    json.dump(problems, sys.stdout)


if __name__ == "__main__":
    main()
