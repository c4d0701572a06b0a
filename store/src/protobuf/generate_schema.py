#!/usr/bin/env python3
"""Generates `schema_table.rs`: the protobuf wire schema of every Kubernetes API message.

Sources (both already in the cargo registry):
- field tags and wire types: the prost attributes in the `k8s-pb` 0.9 crate's generated source;
- JSON property names: the serde keys in `k8s-openapi` 0.29 (`src/v1_37`), matched field by
  field on the normalised name (lower case, no underscores), falling back to lowerCamelCase;
- apiVersion/kind of each top-level kind: the `crate::Resource` impls of `k8s-openapi`.

    python3 store/src/protobuf/generate_schema.py ~/.cargo/registry/src/*/k8s-pb-0.9.0/src \
        ~/.cargo/registry/src/*/k8s-openapi-0.29.0/src/v1_37 > store/src/protobuf/schema_table.rs
"""
import os
import re
import sys

pb_root, oa_root = sys.argv[1], sys.argv[2]

# --- k8s-openapi: JSON names and resource kinds -------------------------------------------
json_by_struct = {}  # (dir, Struct) -> {normalised: json}
json_global = {}
kinds = {}  # (dir, Kind) -> apiVersion
for dirpath, _, files in os.walk(oa_root):
    rel = os.path.relpath(dirpath, oa_root).replace(os.sep, ".")
    for f in files:
        if not f.endswith(".rs"):
            continue
        text = open(os.path.join(dirpath, f)).read()
        m = re.search(r"pub struct (\w+)", text)
        if not m:
            continue
        struct = m.group(1)
        names = {}
        for js, rust in re.findall(r'"([^"]+)" => Field::Key_(\w+),', text):
            norm = rust.lower().replace("_", "")
            names[norm] = js
            json_global.setdefault(norm, js)
            # the JSON name normalised too, for prost names that split acronyms differently
            names.setdefault(js.lower(), js)
        json_by_struct[(rel, struct)] = names
        av = re.search(r'const API_VERSION: &\'static str = "([^"]+)";', text)
        kd = re.search(r'const KIND: &\'static str = "([^"]+)";', text)
        if av and kd and ("impl crate::Resource for " + struct) in text:
            kinds[(rel, kd.group(1))] = av.group(1)


def camel(snake):
    parts = snake.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


# --- k8s-pb: messages ------------------------------------------------------------------------
messages = {}  # full name -> list of (tag, rust_field, scalar, card, type_path)
order = []
attr_re = re.compile(r"#\[prost\((.*)\)\]\s*$")
for dirpath, _, files in os.walk(pb_root):
    for f in sorted(files):
        if f != "mod.rs" or dirpath == pb_root:
            continue
        rel = os.path.relpath(dirpath, pb_root).replace(os.sep, ".")
        lines = open(os.path.join(dirpath, f)).read().split("\n")
        current = None
        i = 0
        while i < len(lines):
            line = lines[i].strip()
            m = re.match(r"pub struct (\w+) \{", line)
            if m:
                current = rel + "." + m.group(1)
                messages[current] = []
                order.append(current)
            elif line == "}":
                current = None
            else:
                a = attr_re.match(line)
                if a and current:
                    attr = a.group(1)
                    decl = ""
                    i += 1
                    while True:
                        decl += (" " if decl else "") + lines[i].strip()
                        if decl.endswith(",") and decl.count("<") == decl.count(">"):
                            break
                        i += 1
                    fm = re.match(r"pub (?:r#)?(\w+):\s*(.*),$", decl)
                    if not fm:
                        sys.exit(f"cannot parse {decl!r} in {current}")
                    rust, ty = fm.group(1), fm.group(2)
                    tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
                    if "map" in attr.split(",")[0]:
                        value = re.search(r'map = "string, (\w+)"', attr).group(1)
                        card = "Map"
                        scalar = value
                    else:
                        scalar = attr.split(",")[0].split("=")[0].strip()
                        card = "Repeated" if "repeated" in attr else "One"
                    path = None
                    if scalar == "message":
                        inner = re.sub(r"\s+", "", ty).replace(",>", ">")
                        for wrap in ("::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"):
                            inner = inner.replace(wrap, "")
                        inner = re.sub(r"::prost::alloc::collections::BTreeMap<::prost::alloc::string::String,\s*", "", inner)
                        inner = inner.rstrip(">").strip()
                        segs = inner.split("::")
                        mod = rel.split(".")
                        while segs and segs[0] == "super":
                            segs.pop(0)
                            mod.pop()
                        path = ".".join(mod + segs)
                    messages[current].append((tag, rust, scalar, card, path))
            i += 1

SPECIAL = {
    "apimachinery.pkg.apis.meta.v1.Time": "Time",
    "apimachinery.pkg.apis.meta.v1.MicroTime": "MicroTime",
    "apimachinery.pkg.apis.meta.v1.Duration": "Duration",
    "apimachinery.pkg.api.resource.Quantity": "Quantity",
    "apimachinery.pkg.util.intstr.IntOrString": "IntOrString",
    "apimachinery.pkg.runtime.RawExtension": "RawJson",
    "apimachinery.pkg.apis.meta.v1.FieldsV1": "RawJson",
    "apiextensions_apiserver.pkg.apis.apiextensions.v1.JSON": "RawJson",
}
index = {name: n for n, name in enumerate(order)}
SCALAR = {"string": "String", "bytes": "Bytes", "int32": "Int32", "int64": "Int64", "bool": "Bool", "double": "Double"}

out = []
out.append("// @generated by store/src/protobuf/generate_schema.py from k8s-pb 0.9 and k8s-openapi 0.29 (v1_37); do not edit.\n")
out.append("use super::schema::{Card, Field, Message, Special, Ty};\n")
out.append("/// Every message, indexed by position.")
out.append("pub(super) static MESSAGES: &[Message] = &[")
for name in order:
    mdir, struct = name.rsplit(".", 1)
    local = json_by_struct.get((mdir, struct), {})
    fields = []
    for tag, rust, scalar, card, path in sorted(messages[name]):
        norm = rust.lower().replace("_", "")
        js = local.get(norm) or json_global.get(norm) or camel(rust)
        if scalar == "message":
            if path not in index:
                sys.stderr.write(f"unresolved {path} in {name}\n")
                continue
            ty = f"Ty::Message({index[path]})"
        else:
            ty = "Ty::" + SCALAR[scalar]
        fields.append(f"Field {{ tag: {tag}, json: {js!r}, ty: {ty}, card: Card::{card} }}".replace("'", '"'))
    special = SPECIAL.get(name, "None")
    out.append(f"    Message {{ name: {name!r}, special: Special::{special}, fields: &[".replace("'", '"'))
    for fl in fields:
        out.append(f"        {fl},")
    out.append("    ] },")
out.append("];\n")
out.append("/// `(apiVersion, kind, message index)` of every top-level kind, sorted.")
out.append("pub(super) static KINDS: &[(&str, &str, u16)] = &[")
rows = []
for (mdir, kind), av in kinds.items():
    name = mdir + "." + kind
    if name in index:
        rows.append((av, kind, index[name]))
    else:
        sys.stderr.write(f"no message for {av} {kind}\n")
for av, kind, n in sorted(rows):
    out.append(f'    ("{av}", "{kind}", {n}),')
out.append("];")
print("\n".join(out))
