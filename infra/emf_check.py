"""Checks that every Embedded Metric Format line in the given log files is EMF: a standalone
JSON object on its own line (CloudWatch ignores EMF nested in another record), valid
against the specification's JSON schema (infra/emf.schema.json), and with the rules the
schema cannot express: each metric's target is a number or an array of at most 100
numbers on the root node, each dimension's target a string, at most 100 metrics per
directive, a namespace that is not AWS/.

Lines without "_aws" are other logs and are skipped. Prints the metric names seen;
exits 1 with the reasons if any line fails, or if no EMF line was found.

Usage: python infra/emf_check.py LOG...
"""

import json
import pathlib
import sys

import jsonschema

SCHEMA = json.loads((pathlib.Path(__file__).parent / "emf.schema.json").read_text())
validator = jsonschema.Draft7Validator(SCHEMA)


def problems(line):
    try:
        doc = json.loads(line)
    except ValueError as e:
        return [f"not a JSON object of its own: {e}"]
    if not isinstance(doc, dict) or "_aws" not in doc:
        return ["\"_aws\" is not a member of the root object (nested in another record?)"]
    out = [e.message for e in validator.iter_errors(doc)]
    for directive in doc.get("_aws", {}).get("CloudWatchMetrics", []):
        if directive.get("Namespace", "").startswith("AWS/"):
            out.append("a namespace under AWS/")
        metrics = directive.get("Metrics", [])
        if len(metrics) > 100:
            out.append("more than 100 metrics in a directive")
        for m in metrics:
            v = doc.get(m.get("Name"))
            numbers = v if isinstance(v, list) else [v]
            if not numbers or len(numbers) > 100 or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in numbers
            ):
                out.append(f"metric {m.get('Name')}: target {v!r} is not a number or up to 100 numbers")
        for dimension_set in directive.get("Dimensions", []):
            for d in dimension_set:
                if not isinstance(doc.get(d), str):
                    out.append(f"dimension {d}: target {doc.get(d)!r} is not a string")
    return out


def main():
    seen, failed, lines = set(), [], 0
    for path in sys.argv[1:]:
        for n, line in enumerate(pathlib.Path(path).read_text(errors="replace").splitlines(), 1):
            if '\\"_aws\\"' in line:
                failed.append(f"{path}:{n}: EMF nested in another record (CloudWatch ignores it)\n  {line[:300]}")
                continue
            if '"_aws"' not in line:
                continue
            lines += 1
            reasons = problems(line)
            if reasons:
                failed.append(f"{path}:{n}: {'; '.join(reasons)}\n  {line[:300]}")
            else:
                doc = json.loads(line)
                for d in doc["_aws"]["CloudWatchMetrics"]:
                    seen.update(m["Name"] for m in d["Metrics"])
    if failed:
        print("\n".join(failed))
        sys.exit(1)
    if not lines:
        print("no EMF line found")
        sys.exit(1)
    print(json.dumps({"lines": lines, "metrics": sorted(seen)}))


if __name__ == "__main__":
    main()
