"""fabric-network/: every file parses, the files agree with each other, the scripts are shellcheck-clean
and the ones that need no Fabric binary run.

What is checked here is the definition, not a running network: no peer or orderer runs on this machine.
Names, hosts, ports and MSP ids come from scripts/env.sh (read by bash itself) and must agree with
crypto-config.yaml, configtx.yaml (both profiles), compose/compose.yaml, the Fabric CA configs, the
chaincode package and definitions, the external builder configuration, and the connection profiles
that scripts/connection-profile.sh writes. One chaincode definition serves every contract of consent/ (they
read each other's state: tests/fabric/test_state_namespaces.py), under the name the services, the chart and
the ledger node use; its endorsement policy names only channel members, needs two organisations, and needs
every hospital for model deployments.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from testkit import component_missing

from ciphercare.consent.caller import msp_id_for_org
from ciphercare.consent.contracts import new_chaincode
from ciphercare.services.platform.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
NET = ROOT / "fabric-network"
SYSTEM_CONTRACT = "org.hyperledger.fabric"


def load_yaml(rel: str) -> Any:
    with open(NET / rel) as f:
        return yaml.safe_load(f)


def shell_vars(script: str, names: list[str], extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """Source ``script`` with bash and read back variables (bash does the parsing, not a regex)."""
    body = f"set -euo pipefail; source {script!s}; " + " ".join(
        f"printf '%s=%s\\0' {n} \"${{{n}:-}}\";" for n in names
    )
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **(extra_env or {})}
    out = subprocess.run(["bash", "-c", body], capture_output=True, text=True, check=True, env=env).stdout
    return dict(item.split("=", 1) for item in out.split("\0") if item)


def endpoints(text: str) -> list[tuple[str, int]]:
    return [(e.rsplit(":", 1)[0], int(e.rsplit(":", 1)[1])) for e in text.split()]


@pytest.fixture(scope="module")
def env() -> dict[str, Any]:
    names = ["CHANNEL_NAME", "DOMAIN", "HOSPITAL_ORGS", "ORDERER_MSP", "ORDERERS", "ORDERER_BFT_EXTRA",
             "ORDERER_ADMIN_OFFSET", "CC_LABEL", "CC_VERSION", "FABRIC_VERSION", "FABRIC_BFT_VERSION",
             "FABRIC_CA_VERSION"]
    raw = shell_vars(str(NET / "scripts/env.sh"), names)
    orgs = raw["HOSPITAL_ORGS"].split()
    per_org = shell_vars(str(NET / "scripts/env.sh"),
                         [f"{p}_{o.replace('-', '_')}" for o in orgs for p in ("ORG_MSP", "PEERS", "CCAAS")])
    return {
        **raw,
        "orgs": orgs,
        "msp": {o: per_org[f"ORG_MSP_{o.replace('-', '_')}"] for o in orgs},
        "peers": {o: endpoints(per_org[f"PEERS_{o.replace('-', '_')}"]) for o in orgs},
        "ccaas": {o: endpoints(per_org[f"CCAAS_{o.replace('-', '_')}"])[0] for o in orgs},
        "orderers": endpoints(raw["ORDERERS"]),
        "bft_extra": endpoints(raw["ORDERER_BFT_EXTRA"]),
    }


@pytest.fixture(scope="module")
def definitions() -> dict[str, str]:
    raw = shell_vars(str(NET / "chaincode/definitions.env"), ["CC_DEFINITIONS"])
    names = raw["CC_DEFINITIONS"].split()
    policies = shell_vars(str(NET / "chaincode/definitions.env"), [f"CC_POLICY_{n}" for n in names])
    return {n: policies[f"CC_POLICY_{n}"] for n in names}


@pytest.fixture(scope="module")
def served(definitions: dict[str, str]) -> dict[str, str]:
    """contract -> the definition serving it (CC_CONTRACTS_<definition>); a contract served twice fails."""
    raw = shell_vars(str(NET / "chaincode/definitions.env"), [f"CC_CONTRACTS_{n}" for n in definitions])
    layout: dict[str, str] = {}
    for name in definitions:
        for contract in raw[f"CC_CONTRACTS_{name}"].split():
            assert contract not in layout, (contract, layout.get(contract), name)
            layout[contract] = name
    return layout


def test_every_yaml_and_json_file_parses() -> None:
    files = sorted(p for p in NET.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and "build" not in p.parts)
    assert len(files) >= 8
    for path in files:
        with open(path) as f:
            doc = yaml.safe_load(f) if path.suffix != ".json" else json.load(f)
        assert doc, path


def test_orgs_msp_ids_and_domains(env: dict[str, Any]) -> None:
    crypto = load_yaml("crypto-config.yaml")
    configtx = load_yaml("configtx.yaml")
    assert env["CHANNEL_NAME"] == "ciphercare"
    # MSP ids are what ciphercare derives from the org name, or consent/caller.py refuses the creator
    assert env["msp"] == {o: msp_id_for_org(o) for o in env["orgs"]} == {
        "hospital-a": "HospitalAMSP", "hospital-b": "HospitalBMSP"}

    peer_orgs = {o["Domain"]: o for o in crypto["PeerOrgs"]}
    assert set(peer_orgs) == {f"{o}.{env['DOMAIN']}" for o in env["orgs"]}
    for org in env["orgs"]:
        spec = peer_orgs[f"{org}.{env['DOMAIN']}"]
        assert spec["EnableNodeOUs"] is True
        assert spec["Template"]["Count"] == len(env["peers"][org])
        count = len(env["peers"][org])
        assert [h for h, _ in env["peers"][org]] == [f"peer{i}.{org}.{env['DOMAIN']}" for i in range(count)]
        assert spec["Users"]["Count"] == 0  # client identities come from the Fabric CA, with attributes
        assert msp_id_for_org(org) == spec["Name"] + "MSP"

    [orderer_org] = crypto["OrdererOrgs"]
    assert orderer_org["Domain"] == env["DOMAIN"]
    hosts = {f"{s['Hostname']}.{env['DOMAIN']}" for s in orderer_org["Specs"]}
    assert hosts == {h for h, _ in env["orderers"] + env["bft_extra"]}

    orgs = {o["ID"]: o for o in configtx["Organizations"]}
    assert set(orgs) == {env["ORDERER_MSP"], *env["msp"].values()}
    for org in env["orgs"]:
        o = orgs[env["msp"][org]]
        assert o["MSPDir"] == f"build/crypto/peerOrganizations/{org}.{env['DOMAIN']}/msp"
        assert [(a["Host"], a["Port"]) for a in o["AnchorPeers"]] == [env["peers"][org][0]]
        for policy in o["Policies"].values():
            assert set(re.findall(r"'([A-Za-z]+)\.", policy["Rule"])) == {env["msp"][org]}
    oo = orgs[env["ORDERER_MSP"]]
    assert oo["MSPDir"] == f"build/crypto/ordererOrganizations/{env['DOMAIN']}/msp"
    assert oo["OrdererEndpoints"] == [f"{h}:{p}" for h, p in env["orderers"]]


def _tls_host(path: str) -> str:
    m = re.search(r"/orderers/([^/]+)/", path)
    assert m, path
    return m.group(1)


def test_raft_and_bft_profiles(env: dict[str, Any]) -> None:
    profiles = load_yaml("configtx.yaml")["Profiles"]
    assert set(profiles) == {"CiphercareRaft", "CiphercareBFT"}
    for profile in profiles.values():
        assert sorted(o["ID"] for o in profile["Application"]["Organizations"]) == sorted(env["msp"].values())
        assert [o["ID"] for o in profile["Orderer"]["Organizations"]] == [env["ORDERER_MSP"]]
        assert set(profile["Application"]["Policies"]) >= {"Readers", "Writers", "Admins", "Endorsement",
                                                          "LifecycleEndorsement"}

    raft = profiles["CiphercareRaft"]["Orderer"]
    assert raft["OrdererType"] == "etcdraft"
    consenters = raft["EtcdRaft"]["Consenters"]
    assert [(c["Host"], c["Port"]) for c in consenters] == env["orderers"] and len(consenters) == 3
    for c in consenters:
        assert _tls_host(c["ClientTLSCert"]) == _tls_host(c["ServerTLSCert"]) == c["Host"]

    bft_profile = profiles["CiphercareBFT"]
    assert bft_profile["Capabilities"] == {"V3_0": True}  # BFT needs Fabric 3
    bft = bft_profile["Orderer"]
    assert bft["OrdererType"] == "BFT"
    mapping = bft["ConsenterMapping"]
    assert [(c["Host"], c["Port"]) for c in mapping] == env["orderers"] + env["bft_extra"] and len(mapping) == 4
    assert sorted(c["ID"] for c in mapping) == [1, 2, 3, 4]
    for c in mapping:
        assert c["MSPID"] == env["ORDERER_MSP"]
        assert _tls_host(c["ClientTLSCert"]) == _tls_host(c["Identity"]) == c["Host"]
        assert c["Identity"].endswith(f"/msp/signcerts/{c['Host']}-cert.pem")
    assert bft["Organizations"][0]["OrdererEndpoints"] == [f"{h}:{p}" for h, p in mapping_pairs(mapping)]
    assert env["FABRIC_BFT_VERSION"].startswith("3.") and env["FABRIC_VERSION"].startswith("2.5.")


def mapping_pairs(mapping: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(c["Host"], c["Port"]) for c in mapping]


def test_compose_matches_the_network(env: dict[str, Any]) -> None:
    compose = load_yaml("compose/compose.yaml")
    services = compose["services"]
    for host, port in env["orderers"] + env["bft_extra"]:
        svc = services[host.split(".")[0]]
        e = svc["environment"]
        assert svc["hostname"] == host and host in svc["networks"]["ciphercare"]["aliases"]
        assert e["ORDERER_GENERAL_LISTENPORT"] == str(port) and e["ORDERER_GENERAL_LOCALMSPID"] == env["ORDERER_MSP"]
        assert e["ORDERER_ADMIN_LISTENADDRESS"].endswith(f":{port + int(env['ORDERER_ADMIN_OFFSET'])}")
        assert f"/orderers/{host}/" in e["ORDERER_GENERAL_LOCALMSPDIR"]
        assert e["ORDERER_GENERAL_BOOTSTRAPMETHOD"] == "none" and e["ORDERER_CHANNELPARTICIPATION_ENABLED"] == "true"
    assert services["orderer3"]["profiles"] == ["bft"]
    for org in env["orgs"]:
        ccaas_host, ccaas_port = env["ccaas"][org]
        for host, port in env["peers"][org]:
            svc = services[f"{host.split('.')[0]}.{org}"]
            e = svc["environment"]
            assert svc["hostname"] == host == e["CORE_PEER_ID"]
            assert e["CORE_PEER_ADDRESS"] == f"{host}:{port}" and e["CORE_PEER_LOCALMSPID"] == env["msp"][org]
            assert f"/peerOrganizations/{org}.{env['DOMAIN']}/peers/{host}/" in e["CORE_PEER_MSPCONFIGPATH"]
            assert e["CIPHERCARE_CCAAS_PORT"] == str(ccaas_port)
            bootstrap = e["CORE_PEER_GOSSIP_BOOTSTRAP"]
            assert bootstrap in [f"{h}:{p}" for h, p in env["peers"][org]] and bootstrap != e["CORE_PEER_ADDRESS"]
            assert "../builders/ccaas:/opt/ciphercare/builders/ccaas:ro" in svc["volumes"]
        cc = services[f"ccaas.{org}"]
        assert cc["hostname"] == ccaas_host
        assert cc["environment"]["CHAINCODE_SERVER_ADDRESS"] == f"0.0.0.0:{ccaas_port}"
        assert cc["environment"]["CHAINCODE_TLS_DISABLED"] == "false"
        # the deploy room's recipe, target "chaincode" (`ciphercare chaincode serve`)
        assert (cc["build"]["dockerfile"], cc["build"]["target"]) == ("deploy/containers/Containerfile", "chaincode")
        assert cc["healthcheck"]["test"][-1] == f"127.0.0.1:{ccaas_port}"
    ports = [p for s in services.values() for p in s.get("ports", [])]
    assert len(ports) == len(set(ports)) and all(p.startswith("127.0.0.1:") for p in ports)
    for name, svc in services.items():
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), (name, image)
        for key, value in svc.get("environment", {}).items():
            if re.search(r"SECRET|PASSWORD|PASSWD|TOKEN", key):
                assert re.fullmatch(r"\$\{[A-Z_]+(:[?-][^}]*)?\}", str(value)), (name, key)  # never a literal
        if not name.startswith("ca."):
            assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]


def test_one_chaincode_definition_serves_every_contract(
    definitions: dict[str, str], served: dict[str, str], env: dict[str, Any]
) -> None:
    contracts = set(new_chaincode()._contracts) - {SYSTEM_CONTRACT}
    assert set(served) == contracts == {"consent", "accesslog", "model", "accessbatch", "breakglass"}
    assert set(definitions) == set(served.values()) == {"ciphercare"}
    # the chaincode server refuses every contract through a definition named after one (consent/server.py)
    assert not set(definitions) & contracts
    # what the services (settings, the chart's default and production example) and the ledger node invoke
    chart = yaml.safe_load((ROOT / "helm/ciphercare/values.yaml").read_text())["ledger"]
    production = yaml.safe_load((ROOT / "helm/ciphercare/ci/production-values.yaml").read_text())["ledger"]
    assert Settings.model_fields["ledger_chaincode"].default == chart["chaincode"] == production["chaincode"] \
        == "ciphercare"
    assert Settings.model_fields["ledger_channel"].default == chart["channel"] == env["CHANNEL_NAME"]
    metadata = json.loads((NET / "chaincode/metadata.json").read_text())
    assert metadata == {"type": "ccaas", "label": env["CC_LABEL"]}
    connection = json.loads((NET / "chaincode/connection.json").read_text())
    assert connection["tls_required"] is True and connection["client_auth_required"] is True
    assert set(re.findall(r"\{\{\.(\w+)\}\}", connection["address"])) == {"orgdomain", "ccport"}
    assert not {"root_cert", "client_key", "client_cert"} & set(connection)  # no key material in the package


# --- endorsement policies ---------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(OutOf|AND|OR|\(|\)|,|'[^']*'|\d+)")


def parse_policy(text: str) -> Any:
    """Fabric's signature-policy syntax: AND(...), OR(...), OutOf(n, ...), 'MSP.role'."""
    tokens = []
    pos = 0
    while pos < len(text.rstrip()):
        m = _TOKEN.match(text, pos)
        assert m, f"cannot parse {text!r} at {pos}"
        tokens.append(m.group(1))
        pos = m.end()

    def expr(i: int) -> tuple[Any, int]:
        tok = tokens[i]
        if tok.startswith("'"):
            msp, _, role = tok.strip("'").partition(".")
            return ("principal", msp, role), i + 1
        assert tok in ("AND", "OR", "OutOf") and tokens[i + 1] == "(", tokens[i:]
        i += 2
        n = None
        if tok == "OutOf":
            n, i = int(tokens[i]), i + 2
        items = []
        while True:
            item, i = expr(i)
            items.append(item)
            if tokens[i] == ")":
                break
            assert tokens[i] == ","
            i += 1
        need = {"AND": len(items), "OR": 1}.get(tok, n)
        return ("outof", need, items), i + 1

    tree, end = expr(0)
    assert end == len(tokens)
    return tree


def satisfying_org_sets(tree: Any) -> list[frozenset[str]]:
    """Every minimal set of organisations whose peers can satisfy the policy."""
    if tree[0] == "principal":
        return [frozenset({tree[1]})]
    _, need, items = tree
    sets = []
    for combo in itertools.combinations(items, need):
        for parts in itertools.product(*(satisfying_org_sets(c) for c in combo)):
            sets.append(frozenset().union(*parts))
    return sets


def test_endorsement_policies_name_members_and_need_two_organisations(
    definitions: dict[str, str], env: dict[str, Any]
) -> None:
    members = set(env["msp"].values())
    for name, text in definitions.items():
        tree = parse_policy(text)
        principals = re.findall(r"'([^'.]+)\.([^']+)'", text)
        assert principals and {m for m, _ in principals} <= members, (name, text)
        assert {r for _, r in principals} == {"peer"}, (name, text)  # endorsements come from peers
        assert min(len(s) for s in satisfying_org_sets(tree)) >= 2, (name, text)  # no single org endorses alone
    assert min(len(s) for s in satisfying_org_sets(parse_policy("OR('HospitalAMSP.peer', 'HospitalBMSP.peer')"))) == 1


def test_model_deployments_need_every_hospital(
    definitions: dict[str, str], served: dict[str, str], env: dict[str, Any]
) -> None:
    """The definition serving the model registry is satisfied only by every member: AND of all of them.

    With the channel's two hospitals OutOf(2, A, B) is that. A third hospital makes this fail: the shared
    definition's OutOf(2, ...) would then let two deploy a model (docs/FABRIC.md, "Endorsement policies").
    """
    members = frozenset(env["msp"].values())
    every = parse_policy("AND(" + ", ".join(f"'{m}.peer'" for m in sorted(members)) + ")")
    assert set(satisfying_org_sets(every)) == {members}
    assert set(satisfying_org_sets(parse_policy(definitions[served["model"]]))) == {members}
    three = "OutOf(2, 'HospitalAMSP.peer', 'HospitalBMSP.peer', 'HospitalCMSP.peer')"
    assert set(satisfying_org_sets(parse_policy(three))) != {members | {"HospitalCMSP"}}  # the check can fail


def test_external_builder_configuration_covers_what_release_reads() -> None:
    builders = load_yaml("config/core-external-builders.yaml")["chaincode"]["externalBuilders"]
    [builder] = builders
    assert builder["path"].endswith("/builders/ccaas")
    release = (NET / "builders/ccaas/bin/release").read_text()
    read = set(re.findall(r"\$\{?((?:CORE_PEER|CIPHERCARE)_[A-Z_]+)", release))
    assert read and read <= set(builder["propagateEnvironment"])
    for script in ("detect", "build", "release"):
        path = NET / "builders/ccaas/bin" / script
        assert os.access(path, os.X_OK)
        assert path.read_text().startswith("#!/bin/sh\n")  # the fabric-peer image has no bash


def test_fabric_ca_configs(env: dict[str, Any]) -> None:
    enroll = (NET / "scripts/enroll-node.sh").read_text()
    for org, port in (("hospital-a", 7054), ("hospital-b", 8054)):
        ca = load_yaml(f"fabric-ca/{org}/fabric-ca-server-config.yaml")
        assert ca["port"] == port and ca["ca"]["name"] == f"ca-{org}" and ca["tls"]["enabled"] is True
        assert ca["ca"]["certfile"] == f"ca/ca.{org}.{env['DOMAIN']}-cert.pem"  # cryptogen's org CA
        assert ca["registry"]["identities"] == []  # no secret in the file
    assert "port=7054" in enroll and '[ "$org" = "hospital-b" ] && port=8054' in enroll
    for attr in ("ciphercare.org", "ciphercare.roles", "ciphercare.client", "hf.EnrollmentID"):
        assert attr in enroll  # the attributes consent/caller.py reads


# --- the scripts -----------------------------------------------------------------------------------------------


def shell_scripts() -> list[Path]:
    found = []
    for path in sorted(NET.rglob("*")):
        if path.is_file() and "build" not in path.parts and (path.suffix in (".sh", ".env") or (
                path.parent.name == "bin" and path.read_text(errors="replace").startswith("#!"))):
            found.append(path)
    return [*found, ROOT / "scripts/setup/42-shellcheck.sh"]


def test_scripts_are_shellcheck_clean() -> None:
    shellcheck = os.environ.get("CIPHERCARE_TEST_SHELLCHECK") or shutil.which("shellcheck")
    if not shellcheck:
        component_missing("shellcheck not installed (scripts/setup/42-shellcheck.sh installs it)")
    scripts = shell_scripts()
    assert len(scripts) >= 14
    done = subprocess.run([shellcheck, "-x", *map(str, scripts)], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stdout + done.stderr


def _ca(tmp: Path, name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (tmp / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_connection_profiles_written_by_the_script(env: dict[str, Any], tmp_path: Path) -> None:
    crypto, profiles = tmp_path / "crypto", tmp_path / "profiles"
    cas = {}
    for org in env["orgs"]:
        cas[org] = _ca(tmp_path, f"tlsca.{org}")
        for host, _ in env["peers"][org]:
            tls = crypto / "peerOrganizations" / f"{org}.{env['DOMAIN']}" / "peers" / host / "tls"
            tls.mkdir(parents=True)
            (tls / "ca.crt").write_bytes(cas[org])
    run_env = {"PATH": os.environ["PATH"], "CRYPTO_DIR": str(crypto), "PROFILE_DIR": str(profiles),
               "BUILD_DIR": str(tmp_path / "build")}
    done = subprocess.run(["bash", str(NET / "scripts/connection-profile.sh")], capture_output=True, text=True,
                          env=run_env)
    assert done.returncode == 0, done.stderr
    configtx_members = {o["ID"] for o in load_yaml("configtx.yaml")["Profiles"]["CiphercareRaft"]["Application"][
        "Organizations"]}
    for org in env["orgs"]:
        profile = json.loads((profiles / f"{org}.json").read_text())
        assert profile["client"]["organization"] == env["msp"][org]
        assert set(profile["organizations"]) == configtx_members
        for other in env["orgs"]:
            o = profile["organizations"][env["msp"][other]]
            assert o["mspid"] == env["msp"][other] and o["peers"] == [h for h, _ in env["peers"][other]]
            for host, port in env["peers"][other]:
                peer = profile["peers"][host]
                assert peer["url"] == f"grpcs://{host}:{port}"
                assert peer["grpcOptions"]["ssl-target-name-override"] == host
                assert peer["tlsCACerts"]["pem"].encode() == cas[other]
        assert set(profile["channels"]) == {env["CHANNEL_NAME"]}
        all_peers = {h for o in env["orgs"] for h, _ in env["peers"][o]}
        assert set(profile["channels"][env["CHANNEL_NAME"]]["peers"]) == all_peers
        x = profile["x-ciphercare"]
        assert x == {"channel": env["CHANNEL_NAME"], "mspId": env["msp"][org], "gatewayPeer": env["peers"][org][0][0],
                     "chaincodes": dict.fromkeys(("consent", "accesslog", "model", "accessbatch", "breakglass"),
                                                 "ciphercare")}
    # a missing TLS CA refuses to write anything (no half profile)
    shutil.rmtree(crypto / "peerOrganizations" / f"hospital-b.{env['DOMAIN']}")
    shutil.rmtree(profiles)
    done = subprocess.run(["bash", str(NET / "scripts/connection-profile.sh")], capture_output=True, text=True,
                          env=run_env)
    assert done.returncode != 0 and "cannot read" in done.stderr and not profiles.exists()


def test_the_external_builder_scripts_run(env: dict[str, Any], tmp_path: Path) -> None:
    """detect / build / release as the peer runs them, on the real package files."""
    bin_dir = NET / "builders/ccaas/bin"
    src, meta, build, release = (tmp_path / d for d in ("src", "meta", "build", "release"))
    for d in (src, meta):
        d.mkdir()
    shutil.copy(NET / "chaincode/connection.json", src / "connection.json")
    shutil.copy(NET / "chaincode/metadata.json", meta / "metadata.json")
    base = {"PATH": os.environ["PATH"]}
    assert subprocess.run([bin_dir / "detect", src, meta], env=base).returncode == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "metadata.json").write_text('{"type": "golang", "label": "x"}')
    assert subprocess.run([bin_dir / "detect", src, other], env=base).returncode == 1
    done = subprocess.run([bin_dir / "build", src, meta, build], env=base, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    org = "hospital-a"
    host, (cc_host, cc_port) = env["peers"][org][0][0], env["ccaas"][org]
    root = _ca(tmp_path, "tlsca")
    cert = _ca(tmp_path, "peer-tls")  # _ca leaves the certificate's key in key.pem
    key = (tmp_path / "key.pem").read_bytes()
    for name, data in (("root.pem", root), ("tls.key", key), ("tls.crt", cert)):
        (tmp_path / name).write_bytes(data)
    peer_env = {**base, "CORE_PEER_ID": host, "CIPHERCARE_CCAAS_PORT": str(cc_port),
                "CORE_PEER_TLS_ROOTCERT_FILE": str(tmp_path / "root.pem"),
                "CORE_PEER_TLS_KEY_FILE": str(tmp_path / "tls.key"),
                "CORE_PEER_TLS_CERT_FILE": str(tmp_path / "tls.crt")}
    done = subprocess.run([bin_dir / "release", build, release], env=peer_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    conn = json.loads((release / "chaincode/server/connection.json").read_text())
    assert conn["address"] == f"{cc_host}:{cc_port}"
    assert (conn["tls_required"], conn["client_auth_required"]) == (True, True)
    assert (conn["root_cert"].encode(), conn["client_key"].encode(), conn["client_cert"].encode()) == (root, key, cert)
    # without its environment the release refuses instead of writing a broken connection.json
    done = subprocess.run([bin_dir / "release", build, tmp_path / "r2"], env=base, capture_output=True, text=True)
    assert done.returncode != 0 and "CORE_PEER_ID" in done.stderr


def test_peer_config_puts_our_builder_before_fabrics_own(tmp_path: Path) -> None:
    """scripts/lib.sh write_peer_config: Fabric's core.yaml plus our builder, first in the list."""
    base = tmp_path / "core.yaml"
    base.write_text(yaml.safe_dump({"peer": {"id": "x"}, "chaincode": {"externalBuilders": [
        {"name": "ccaas_builder", "path": "/opt/hyperledger/ccaas_builder",
         "propagateEnvironment": ["CHAINCODE_AS_A_SERVICE_BUILDER_CONFIG"]}]}}))
    script = (f"set -euo pipefail; source {NET / 'scripts/env.sh'}; source {NET / 'scripts/lib.sh'}; "
              f"write_peer_config {base} /opt/ciphercare/builders/ccaas")
    env = {"PATH": os.environ["PATH"], "BUILD_DIR": str(tmp_path / "build"), "PYTHON": sys.executable}
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    core = yaml.safe_load((tmp_path / "build/config/core.yaml").read_text())
    assert [b["name"] for b in core["chaincode"]["externalBuilders"]] == ["ciphercare-ccaas", "ccaas_builder"]
    assert core["chaincode"]["externalBuilders"][0]["path"] == "/opt/ciphercare/builders/ccaas"
    assert core["peer"] == {"id": "x"}
