#!/usr/bin/env python3
"""Checks rendered Helm manifests (the output of `helm template`) for scripts/helm-test.sh.

validate FILE...   every manifest against the Kubernetes schemas of each --kubernetes version
                   (kubernetes-validate, strict: unknown fields fail), and the custom resources
                   (ServiceMonitor, ScaledObject) against their CRDs' schemas with node and the
                   @kubernetes-models packages in --crd-models. Any other kind fails.
check FILE         the config-drift test: for every container whose command is one of our server
                   binaries, builds the environment Kubernetes would give it (service links when
                   enableServiceLinks is not false, envFrom ConfigMaps and Secrets, env entries
                   with $(VAR) expansion, fieldRef values of a made-up pod) and runs
                   `<bin-dir>/<binary> <args> --check-config` in exactly that environment plus
                   PATH. Expects status 0 from every binary, or with --expect-status N and
                   --binary B (repeatable), status N from each B, whose stderr must contain
                   --stderr-contains.
doc-tables DOC FILE...
                   the tables of MOE_* variables in DOC (each after a `<!-- env-table: BINARY -->`
                   line) list exactly the MOE_* variables the rendered FILEs give BINARY.
schema-env SCHEMA  the MOE_* names values.schema.json allows in each component's extraEnv are
                   exactly the variables its binary reads (from `<binary> --help`).

Prints one line per manifest or container it checked; exits 1 on the first unexpected outcome.
"""

import argparse
import base64
import json
import os
import re
import subprocess
import sys

import yaml

BINARIES = ("gateway", "coordinator", "expert-node")
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): (
        "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor",
        "ServiceMonitor",
    ),
    ("keda.sh/v1alpha1", "ScaledObject"): (
        "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject",
        "ScaledObject",
    ),
}


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def name_of(doc):
    return f"{doc['kind'].lower()}/{doc['metadata']['name']}"


# --- validate ---------------------------------------------------------------------------------


def validate(args):
    import kubernetes_validate.utils as kv

    # The library reads and parses the schema files on every call; they do not change.
    cache = {}
    read = kv.schema_contents

    def cached(filename, version):
        if filename not in cache:
            cache[filename] = read(filename, version)
        return cache[filename]

    kv.schema_contents = cached

    builtin, custom = 0, []
    for path in args.files:
        for doc in load(path):
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key in CRD_KINDS:
                custom.append((path, doc))
                continue
            for version in args.kubernetes:
                try:
                    kv.validate(doc, version, strict=True)
                except kv.ValidationError as e:
                    where = ".".join(str(p) for p in e.path)
                    sys.exit(f"FAIL {path}: {name_of(doc)} against {version}: {where}: {e.message}")
                except kv.SchemaNotFoundError as e:
                    sys.exit(f"FAIL {path}: {e.message}")
            builtin += 1
    versions = ", ".join(args.kubernetes)
    print(f"  {builtin} manifests valid against Kubernetes {versions} (strict)")
    if custom:
        validate_custom(args.crd_models, custom)
        kinds = sorted({d["kind"] for _, d in custom})
        print(f"  {len(custom)} custom resources ({', '.join(kinds)}) valid against their CRD schemas")


NODE_VALIDATOR = """
import { readFileSync } from "node:fs";
const models = {};
%s
const docs = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const [where, doc] of docs) {
  const Model = models[doc.apiVersion + "/" + doc.kind];
  try { new Model(doc).validate(); }
  catch (e) { failed++; console.log(`FAIL ${where}: ${doc.kind}/${doc.metadata.name}: ${e.message}`); }
}
process.exit(failed ? 1 : 0);
"""


def validate_custom(models_dir, docs):
    imports = "\n".join(
        f'models["{api}/{kind}"] = (await import("{module}")).{export};'
        for (api, kind), (module, export) in CRD_KINDS.items()
    )
    payload = json.dumps([[path, doc] for path, doc in docs])
    done = subprocess.run(
        ["node", "--input-type=module", "-e", NODE_VALIDATOR % imports],
        input=payload,
        text=True,
        cwd=models_dir,
        capture_output=True,
    )
    if done.returncode != 0:
        sys.exit(done.stdout + done.stderr)


# --- check ------------------------------------------------------------------------------------


def expand(text, env):
    """Kubernetes' $(VAR) expansion: known names are replaced, $$ escapes, the rest stays."""

    def one(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env.get(name, m.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", one, text)


def service_links(docs, namespace):
    """The variables the kubelet adds for each Service with a cluster IP (docker links style)."""
    env = {}
    for doc in docs:
        if doc["kind"] != "Service" or doc["metadata"].get("namespace", namespace) != namespace:
            continue
        spec = doc.get("spec", {})
        if spec.get("clusterIP") == "None" or spec.get("type") == "ExternalName":
            continue
        name = doc["metadata"]["name"].upper().replace("-", "_")
        ip = "10.96.0.10"
        ports = spec.get("ports", [])
        if not ports:
            continue
        first = ports[0]
        env[f"{name}_SERVICE_HOST"] = ip
        env[f"{name}_SERVICE_PORT"] = str(first["port"])
        for p in ports:
            proto = p.get("protocol", "TCP")
            if p.get("name"):
                env[f"{name}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = str(p["port"])
            prefix = f"{name}_PORT_{p['port']}_{proto}"
            env[prefix] = f"{proto.lower()}://{ip}:{p['port']}"
            env[f"{prefix}_PROTO"] = proto.lower()
            env[f"{prefix}_PORT"] = str(p["port"])
            env[f"{prefix}_ADDR"] = ip
        env[f"{name}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
    return env


def find(docs, kind, name):
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    return None


def secret_data(doc):
    data = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
    data.update(doc.get("stringData") or {})
    return data


def field(workload, pod_name, path, pod_ip):
    meta = workload["spec"]["template"]["metadata"]
    values = {
        "metadata.name": pod_name,
        "metadata.namespace": workload["metadata"].get("namespace", "default"),
        "metadata.uid": "3f2c9a1e-5b7d-4c1a-9e2f-0a1b2c3d4e5f",
        "spec.nodeName": "gpu-box-1",
        "spec.serviceAccountName": workload["spec"]["template"]["spec"].get(
            "serviceAccountName", "default"
        ),
        "status.podIP": pod_ip,
        "status.hostIP": "192.0.2.10",
    }
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    if path not in values:
        raise ValueError(f"fieldRef {path} is not simulated")
    return values[path]


def container_env(docs, workload, container, pod_ip, force_links):
    """The environment Kubernetes gives `container` of `workload`'s pods, in its order."""
    namespace = workload["metadata"].get("namespace", "default")
    pod_spec = workload["spec"]["template"]["spec"]
    if workload["kind"] == "StatefulSet":
        pod_name = f"{workload['metadata']['name']}-0"
    else:
        pod_name = f"{workload['metadata']['name']}-6d9f7c8b5d-x2x9z"
    env = {}
    if force_links or pod_spec.get("enableServiceLinks", True):
        env.update(service_links(docs, namespace))
    where = f"{name_of(workload)} container {container['name']}"
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref = source["configMapRef"]
            cm = find(docs, "ConfigMap", ref["name"])
            if cm is None:
                if ref.get("optional"):
                    continue
                raise ValueError(f"{where}: envFrom ConfigMap {ref['name']} is not rendered")
            data = cm.get("data") or {}
        else:
            ref = source["secretRef"]
            secret = find(docs, "Secret", ref["name"])
            if secret is None:
                if ref.get("optional"):
                    continue
                raise ValueError(f"{where}: envFrom Secret {ref['name']} is not rendered")
            data = secret_data(secret)
        for key, value in data.items():
            env[prefix + key] = str(value)
    for entry in container.get("env", []):
        name = entry["name"]
        if "valueFrom" not in entry:
            env[name] = expand(str(entry.get("value", "")), env)
            continue
        source = entry["valueFrom"]
        if "fieldRef" in source:
            env[name] = field(workload, pod_name, source["fieldRef"]["fieldPath"], pod_ip)
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = find(docs, "Secret", ref["name"])
            # A Secret the user creates (existingSecret) is not rendered: any value will do.
            env[name] = secret_data(secret)[ref["key"]] if secret else "from-secret-" + ref["name"]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            cm = find(docs, "ConfigMap", ref["name"])
            if cm is None:
                raise ValueError(f"{where}: ConfigMap {ref['name']} is not rendered")
            env[name] = str((cm.get("data") or {})[ref["key"]])
        elif "resourceFieldRef" in source:
            env[name] = "1"
        else:
            raise ValueError(f"{where}: env {name}: unknown valueFrom {source}")
    return env


_SECRET_FILES = {}


def secret_files():
    """A directory holding what a TLS Secret mounts (tls.crt, tls.key, ca.crt): a throwaway CA
    and a certificate it signed, made once with openssl."""
    if "dir" not in _SECRET_FILES:
        import tempfile

        d = tempfile.mkdtemp(prefix="moe-chart-tls-")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        run = lambda *a: subprocess.run(["openssl", *a], cwd=d, check=True, capture_output=True)
        run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=test-ca", "-days", "1")
        run("req", *ec, "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=moe")
        with open(os.path.join(d, "ext.cnf"), "w") as f:
            f.write("subjectAltName=DNS:moe\nextendedKeyUsage=serverAuth,clientAuth\n")
        run("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-extfile", "ext.cnf", "-out", "tls.crt", "-days", "1")
        _SECRET_FILES["dir"] = d
    return _SECRET_FILES["dir"]


def with_mounted_secrets(docs, workload, container, env):
    """`env` with every path under a mounted Secret the release does not render (one the user
    creates, such as a TLS Secret) pointing at files of the same names made here instead."""
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
    mounts = []
    for mount in container.get("volumeMounts", []):
        secret = volumes.get(mount["name"], {}).get("secret")
        if secret and find(docs, "Secret", secret["secretName"]) is None:
            mounts.append(mount["mountPath"].rstrip("/") + "/")
    changed = dict(env)
    for name, value in env.items():
        for mount in mounts:
            if value.startswith(mount):
                changed[name] = os.path.join(secret_files(), value[len(mount):])
    return changed


def workloads(docs):
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            spec = doc["spec"]["template"]["spec"]
            for container in spec.get("initContainers", []) + spec.get("containers", []):
                command = container.get("command") or []
                binary = os.path.basename(command[0]) if command else None
                if binary in BINARIES:
                    yield doc, container, binary


def check(args):
    docs = load(args.file)
    found = list(workloads(docs))
    if not found:
        sys.exit(f"FAIL {args.file}: no container runs one of {', '.join(BINARIES)}")
    seen = set()
    for workload, container, binary in found:
        env = container_env(docs, workload, container, args.pod_ip, args.service_links)
        env = with_mounted_secrets(docs, workload, container, env)
        words = [expand(w, env) for w in container["command"][1:] + container.get("args", [])]
        program = os.path.join(args.bin_dir, binary)
        run_env = dict(env, PATH=os.environ.get("PATH", "/usr/bin:/bin"))
        done = subprocess.run(
            [program, *words, "--check-config"], env=run_env, capture_output=True, text=True
        )
        named = binary in args.binary
        expected = args.expect_status if named else 0
        said = (done.stdout + done.stderr).strip().replace("\n", " | ")
        where = f"{binary:<11} {name_of(workload)}"
        counted = f"{len(env)} variables, {len(words)} args"
        unexpected = done.returncode != expected or (
            named and args.stderr_contains and args.stderr_contains not in done.stderr
        )
        if unexpected:
            assignments = " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(env.items()))
            sys.exit(
                f"FAIL {where} ({counted}): status {done.returncode}, expected {expected}: {said}\n"
                f"     reproduce: env -i PATH=\"$PATH\" {assignments} {program} "
                f"{' '.join(words)} --check-config"
            )
        shown = said if len(said) <= 160 else said[:157] + "..."
        print(f"  status {done.returncode} {where} ({counted}): {shown}")
        seen.add(binary)
    for binary in set(args.binary) - seen:
        sys.exit(f"FAIL {args.file}: no {binary} container to check")


# --- doc-tables -------------------------------------------------------------------------------


def doc_tables(args):
    with open(args.doc) as f:
        lines = f.read().splitlines()
    documented = {}
    for i, line in enumerate(lines):
        m = re.fullmatch(r"<!-- env-table: ([a-z-]+) -->", line.strip())
        if not m:
            continue
        names = set()
        for row in lines[i + 1 :]:
            if not row.startswith("|"):
                break
            cells = [c.strip() for c in row.strip("|").split("|")]
            names.update(re.findall(r"`(MOE_[A-Z0-9_]+)`", cells[1] if len(cells) > 1 else ""))
        documented[m.group(1)] = names
    rendered = {binary: set() for binary in BINARIES}
    for path in args.files:
        docs = load(path)
        for workload, container, binary in workloads(docs):
            env = container_env(docs, workload, container, "10.244.1.17", False)
            rendered[binary].update(k for k in env if k.startswith("MOE_"))
    for binary in BINARIES:
        if binary not in documented:
            sys.exit(f"FAIL {args.doc}: no `<!-- env-table: {binary} -->` table")
        if documented[binary] != rendered[binary]:
            sys.exit(
                f"FAIL {args.doc}: the {binary} table lists "
                f"{sorted(documented[binary] - rendered[binary])} that no template sets and misses "
                f"{sorted(rendered[binary] - documented[binary])}"
            )
        print(f"  {binary}: the table lists the {len(rendered[binary])} MOE_* variables the templates set")


# --- schema-env -------------------------------------------------------------------------------

SCHEMA_ENV = {"gateway": "gatewayEnv", "coordinator": "coordinatorEnv", "expert-node": "expertNodeEnv"}


def binary_env(program):
    done = subprocess.run(
        [program, "--help"], env={}, capture_output=True, text=True, check=True
    )
    return sorted(set(re.findall(r"\[env: (MOE_[A-Z0-9_]+)=", done.stdout)))


def schema_env(args):
    with open(args.schema) as f:
        definitions = json.load(f)["definitions"]
    for binary, definition in SCHEMA_ENV.items():
        rule = definitions[definition]["items"]["allOf"][0]
        allowed = sorted(rule["then"]["properties"]["name"]["enum"])
        read = binary_env(os.path.join(args.bin_dir, binary))
        if allowed != read:
            sys.exit(
                f"FAIL {args.schema}: {definition} allows {sorted(set(allowed) - set(read))} "
                f"that {binary} does not read and misses {sorted(set(read) - set(allowed))}"
            )
        print(f"  {binary}: the schema allows its {len(read)} MOE_* variables in extraEnv, no others")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate")
    v.add_argument("files", nargs="+")
    v.add_argument("--kubernetes", action="append", required=True)
    v.add_argument("--crd-models", required=True, help="npm prefix holding @kubernetes-models")
    c = sub.add_parser("check")
    c.add_argument("file")
    c.add_argument("--bin-dir", required=True)
    c.add_argument("--pod-ip", default="10.244.1.17")
    c.add_argument("--binary", choices=BINARIES, action="append", default=[])
    c.add_argument("--expect-status", type=int, default=0)
    c.add_argument("--stderr-contains")
    c.add_argument(
        "--service-links",
        action="store_true",
        help="add service link variables even where enableServiceLinks is false",
    )
    d = sub.add_parser("doc-tables")
    d.add_argument("doc")
    d.add_argument("files", nargs="+")
    e = sub.add_parser("schema-env")
    e.add_argument("schema")
    e.add_argument("--bin-dir", required=True)
    args = parser.parse_args()
    try:
        commands = {
            "validate": validate,
            "check": check,
            "doc-tables": doc_tables,
            "schema-env": schema_env,
        }
        commands[args.command](args)
    except ValueError as e:
        sys.exit(f"FAIL {e}")


if __name__ == "__main__":
    main()
