"""deploy/k8s: every manifest validates strictly (unknown fields refused)
against the Kubernetes JSON schemas that kubernetes-validate ships (offline),
a broken one does not, the pieces name each other correctly, and what the
probes and the Ingress send passes a real daemon's Host check."""
import copy
import glob
import http.client
import os
import tomllib

import pytest
import yaml

from deploy_support import DEPLOY, config_problems, dockerfile_instructions
from tether_testing import Daemon

kubernetes_validate = pytest.importorskip("kubernetes_validate")

K8S = os.path.join(DEPLOY, "k8s")
#: The oldest and the newest Kubernetes minor versions checked.
VERSIONS = ["1.29.0", "1.37.0"]


def manifests():
    return sorted(p for p in glob.glob(os.path.join(K8S, "*.yaml")) if not p.endswith("kustomization.yaml"))


def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def resources():
    """{kind: the resource} (one of each kind here)."""
    out = {}
    for path in manifests():
        for d in docs(path):
            assert d["kind"] not in out, "two %ss" % d["kind"]
            out[d["kind"]] = d
    return out


def validate(doc, version):
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", manifests(), ids=os.path.basename)
def test_every_manifest_validates_strictly(path, version):
    for d in docs(path):
        validate(d, version)


def container(deploy, name):
    (c,) = [c for c in deploy["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return c


def broken_typo(d):
    container(d, "tether")["imagePullPolicyy"] = "IfNotPresent"


def broken_type(d):
    container(d, "tether")["ports"][0]["containerPort"] = "7070"


def broken_missing(d):
    del d["spec"]["selector"]


def broken_probe(d):
    container(d, "tether")["readinessProbe"]["httpGet"]["paht"] = "/healthz"


@pytest.mark.parametrize("breakage", [broken_typo, broken_type, broken_missing, broken_probe],
                         ids=["typo", "wrong-type", "missing-required", "nested-typo"])
def test_a_broken_manifest_is_refused(breakage):
    d = copy.deepcopy(resources()["Deployment"])
    validate(d, VERSIONS[-1])
    breakage(d)
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(d, VERSIONS[-1])


def test_kustomization_lists_every_manifest():
    with open(os.path.join(K8S, "kustomization.yaml")) as f:
        k = yaml.safe_load(f)
    assert sorted(k["resources"]) == sorted(os.path.basename(p) for p in manifests())


def test_the_pieces_name_each_other():
    r = resources()
    dep, svc, ing, cm, secret = r["Deployment"], r["Service"], r["Ingress"], r["ConfigMap"], r["Secret"]
    pod = dep["spec"]["template"]
    assert pod["spec"]["shareProcessNamespace"] is True
    labels = pod["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["selector"].items() <= labels.items()
    tether = container(dep, "tether")
    ports = {p["name"]: p["containerPort"] for p in tether["ports"]}
    (sport,) = svc["spec"]["ports"]
    assert sport["targetPort"] in ports
    # The Ingress goes to the Service's port.
    (rule,) = ing["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == svc["metadata"]["name"] and backend["port"]["name"] == sport["name"]
    ann = ing["metadata"]["annotations"]
    for k in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(ann["nginx.ingress.kubernetes.io/" + k]) >= 3600
    assert "nginx.ingress.kubernetes.io/proxy-body-size" in ann
    # The config: valid flags, listening on the container's port, allowing
    # the Ingress's host.
    text = cm["data"]["config.toml"]
    assert config_problems(text) == []
    cfg = tomllib.loads(text)
    assert int(cfg["listen"].rsplit(":", 1)[1]) == ports[sport["targetPort"]]
    assert rule["host"] in cfg["allow-host"]
    # ... mounted where --config reads it.
    args = tether["args"]
    config_path = args[args.index("--config") + 1]
    mounts = {m["name"]: m["mountPath"] for m in tether["volumeMounts"]}
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    (cfg_vol,) = [n for n, v in vols.items() if v.get("configMap", {}).get("name") == cm["metadata"]["name"]]
    assert config_path == os.path.join(mounts[cfg_vol], "config.toml")
    # The token from the Secret.
    (tok,) = [e for e in tether["env"] if e["name"] == "TETHER_TOKEN"]
    ref = tok["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    # Probes on /healthz at the named port.
    for probe in ("readinessProbe", "livenessProbe"):
        get = tether[probe]["httpGet"]
        assert (get["path"], get["port"]) == ("/healthz", sport["targetPort"])
    # The workspace shared by both containers, and files-root on it.
    sandbox = container(dep, "sandbox")
    shared = {m["mountPath"] for m in sandbox["volumeMounts"]} & set(mounts.values())
    assert cfg["files-root"] in shared
    # The pod's user is the image's.
    user = [a for k, a in dockerfile_instructions(os.path.join(DEPLOY, "container", "Dockerfile")) if k == "USER"][-1]
    assert str(pod["spec"]["securityContext"]["runAsUser"]) == user.split(":")[0]


def get(url, path, host, token=None):
    c = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
    c.putrequest("GET", path, skip_host=True)
    c.putheader("Host", host)
    if token:
        c.putheader("Authorization", "Bearer " + token)
    c.endheaders()
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def test_the_probes_and_the_ingress_host_pass_the_daemons_checks():
    cfg = tomllib.loads(resources()["ConfigMap"]["data"]["config.toml"])
    allow = [a for h in cfg["allow-host"] for a in ("--allow-host", h)]
    with Daemon(*allow) as d:
        # The kubelet's probe: Host is the pod's IP and port, no token.
        assert get(d.url, "/healthz", "10.1.2.3:7070") == (200, b"ok\n")
        # Through the Ingress: Host is its host.
        host = resources()["Ingress"]["spec"]["rules"][0]["host"]
        assert get(d.url, "/healthz", host) == (200, b"ok\n")
        assert get(d.url, "/v1/commands", host)[0] == 401
        assert get(d.url, "/v1/commands", host, d.token)[0] == 200
        # Any other name is refused (DNS rebinding).
        assert get(d.url, "/healthz", "evil.example.net")[0] == 403
    # Without allow-host, the Ingress's host would be refused too.
    with Daemon() as d:
        assert get(d.url, "/healthz", host)[0] == 403


def test_the_configmaps_config_starts_a_daemon(tmp_path):
    from deploy_support import serve_flags

    if "config" not in serve_flags():
        pytest.skip("this daemon has no --config yet")
    text = resources()["ConfigMap"]["data"]["config.toml"]
    # The pod's /workspace is a temp dir here; Daemon's --listen 127.0.0.1:0
    # wins over the file's 0.0.0.0:7070.
    cfg = tomllib.loads(text)
    (tmp_path / "workspace").mkdir()
    path = tmp_path / "config.toml"
    path.write_text(text.replace('"%s"' % cfg["files-root"], '"%s"' % (tmp_path / "workspace")))
    host = resources()["Ingress"]["spec"]["rules"][0]["host"]
    with Daemon("--config", str(path)) as d:
        assert get(d.url, "/healthz", host) == (200, b"ok\n")
        assert get(d.url, "/healthz", "evil.example.net")[0] == 403
