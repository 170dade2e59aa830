#!/usr/bin/env python3
"""Render the faultline chart offline with Helm's own template engine, without a helm binary.

    deploy/helm/render.py OUT_DIR [--values FILE.json|yaml]... [--set-json JSON]... \
        [--release NAME] [--namespace NS]

Writes one file per rendered template under OUT_DIR (NOTES.txt included), runs `helm lint`,
and exits non-zero on a render error or a lint error. The engine is Helm v4's Go SDK as
shipped by the PyPI package helm-python-sdk (its wheel bundles libhelm_c, a C ABI over the
official helm.sh/helm/v4 packages), because the machines this project is built on can
install neither a Debian nor a PyPI `helm` binary. Where helm is installed,
`helm template faultline deploy/helm/faultline` renders the same output.
"""
import argparse
import json
import os
import sys

import helm_python as helm
import yaml


def merge(base, extra):
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = v
    return base


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--chart", default=os.path.join(here, "faultline"))
    p.add_argument("--values", action="append", default=[])
    p.add_argument("--set-json", action="append", default=[])
    p.add_argument("--release", default="faultline")
    p.add_argument("--namespace", default="faultline")
    a = p.parse_args()
    values = {}
    for f in a.values:
        with open(f) as fh:
            merge(values, yaml.safe_load(fh) or {})
    for j in a.set_json:
        merge(values, json.loads(j))
    # Severity: 1 info, 2 warning, 3 error; strict makes warnings errors, as `helm lint --strict`.
    lint = helm.lint(a.chart, values, strict=True, namespace=a.namespace)
    errors = [m for m in lint.get("messages", []) if m.get("severity", 0) >= 2]
    errors += list(lint.get("errors") or [])
    for m in lint.get("messages", []):
        print(f"lint: {m}", file=sys.stderr)
    if errors:
        print(f"helm lint failed: {errors}", file=sys.stderr)
        return 1
    with helm.Chart.load(a.chart) as chart:
        try:
            out = chart.render(values, name=a.release, namespace=a.namespace)
        except helm.HelmRenderError as e:
            print(f"helm template failed: {e}", file=sys.stderr)
            return 1
    for name, text in sorted(out.items()):
        dest = os.path.join(a.out, name)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "w") as fh:
            fh.write(text)
        print(dest)
    print(f"helm engine {helm.helm_sdk_version()} (helm-python-sdk)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
