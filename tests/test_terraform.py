"""Static checks of terraform/ (no terraform binary or provider can run here).

Each test asserts concrete facts parsed from the .tf files with python-hcl2, or checks that
the files agree with the Python code they deploy (BigQuery schema, environment, requirements).
"""

from __future__ import annotations

import ast
import base64
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from imports_testing import FIRST_PARTY, distribution_of, installed_by
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from terraform_config import (
    TERRAFORM_DIR,
    Config,
    archive_files,
    load,
    project_files,
    references,
    startup_commands,
    startup_installs,
)

REPO = TERRAFORM_DIR.parent
SEED_VARIABLES = {
    "project_id",
    "region",
    "zone",
    "db_password",
    "admin_email",
    "organization_domain",
}
CONCERN_FILES = {
    "versions.tf",
    "variables.tf",
    "outputs.tf",
    "apis.tf",
    "network.tf",
    "firewall.tf",
    "iam.tf",
    "secrets.tf",
    "pubsub.tf",
    "gateway.tf",
    "processor.tf",
    "sql.tf",
    "bigquery.tf",
    "dashboard.tf",
    "monitoring.tf",
    "storage.tf",
}


@pytest.fixture(scope="module")
def tf() -> Config:
    return load()


def only(mapping: dict[str, Any]) -> Any:
    assert len(mapping) == 1, sorted(mapping)
    return next(iter(mapping.values()))


def block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The single nested block `name` of a resource body."""
    value = body[name]
    assert isinstance(value, list) and len(value) == 1, (name, value)
    return value[0]


def test_one_file_per_concern(tf: Config) -> None:
    assert set(tf.files) >= CONCERN_FILES
    assert len(tf.resources) > 50  # the parser saw the whole configuration


@pytest.mark.skipif(shutil.which("terraform") is None, reason="no terraform binary on PATH")
def test_terraform_fmt_accepts_every_file() -> None:
    """Terraform's own parser (no provider needed): syntax and canonical formatting."""
    result = subprocess.run(
        ["terraform", "fmt", "-check", "-diff", "-recursive", str(TERRAFORM_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CHECKPOINT_DISABLE": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_providers_are_pinned(tf: Config) -> None:
    (terraform,) = tf.files["versions.tf"]["terraform"]
    (providers,) = terraform["required_providers"]
    assert set(providers) == {"google", "google-beta", "archive", "random"}
    for name, spec in providers.items():
        assert re.fullmatch(r"~> \d+\.\d+", spec["version"]), (name, spec["version"])
    assert providers["google-beta"]["version"] == providers["google"]["version"]
    # Write-only arguments (secrets.tf) need Terraform 1.11.
    floor = re.match(r">= (\d+)\.(\d+)", terraform["required_version"])
    assert floor and (int(floor[1]), int(floor[2])) >= (1, 11), terraform["required_version"]


def test_user_credentials_bill_this_project_for_quota(tf: Config) -> None:
    """With `gcloud auth application-default login` credentials, APIs such as the budgets API
    refuse calls without a quota project: every Google provider names this one."""
    for provider in tf.files["versions.tf"]["provider"]:
        for name, body in provider.items():
            assert body["user_project_override"] is True, name
            assert body["billing_project"] == "${var.project_id}", name


# --- network ------------------------------------------------------------------------------


def test_exactly_three_subnets_with_the_documented_ranges(tf: Config) -> None:
    subnets = tf.of_type("google_compute_subnetwork")
    cidrs = {name: tf.resolve(body["ip_cidr_range"]) for name, body in subnets.items()}
    assert cidrs == {"public": "10.0.1.0/24", "private": "10.0.2.0/24", "data": "10.0.3.0/24"}
    for name, body in subnets.items():
        assert body["private_ip_google_access"] is True, name
        assert block(body, "log_config")["flow_sampling"] > 0, f"{name}: flow logs off"
        assert body["network"] == "${google_compute_network.main.id}"
    network = tf.resources[("google_compute_network", "main")]
    assert network["auto_create_subnetworks"] is False
    # The private services range (Cloud SQL) must not overlap a subnet.
    psa = ipaddress.ip_network(tf.variables["private_services_cidr"]["default"])
    assert not any(psa.overlaps(ipaddress.ip_network(c)) for c in cidrs.values())


def test_each_tier_runs_in_its_subnet(tf: Config) -> None:
    gateway = block(tf.resources[("google_cloud_run_v2_service", "gateway")], "template")
    gateway_nic = block(block(gateway, "vpc_access"), "network_interfaces")
    assert gateway_nic["subnetwork"] == "${google_compute_subnetwork.public.id}"
    function = tf.resources[("google_cloudfunctions2_function", "processor")]
    function_nic = block(block(function, "service_config"), "direct_vpc_network_interface")
    assert function_nic["subnetwork"] == "${google_compute_subnetwork.private.id}"
    vm = tf.resources[("google_compute_instance", "dashboard")]
    assert block(vm, "network_interface")["subnetwork"] == "${google_compute_subnetwork.private.id}"
    sql = block(
        block(tf.resources[("google_sql_database_instance", "main")], "settings"),
        "ip_configuration",
    )
    assert sql["allocated_ip_range"] == "${google_compute_global_address.private_services.name}"


def test_nat_covers_the_private_and_data_subnets_only(tf: Config) -> None:
    nat = only(tf.of_type("google_compute_router_nat"))
    assert nat["source_subnetwork_ip_ranges_to_nat"] == "LIST_OF_SUBNETWORKS"
    covered = {s["name"] for s in nat["subnetwork"]}
    assert covered == {
        "${google_compute_subnetwork.private.id}",
        "${google_compute_subnetwork.data.id}",
    }
    assert block(nat, "log_config")["enable"] is True


def test_firewall_denies_by_default_and_opens_nothing_to_the_internet(tf: Config) -> None:
    rules = tf.of_type("google_compute_firewall")
    for name, rule in rules.items():
        assert "log_config" in rule, f"{name}: firewall logging off"
        sources = [tf.resolve(s) for s in rule.get("source_ranges", [])]
        if "allow" in rule:
            assert "0.0.0.0/0" not in sources and "::/0" not in sources, name
            assert rule.get("target_tags") or rule.get("target_service_accounts"), (
                f"{name}: an allow rule must name its targets"
            )
    deny_ingress = [
        r
        for r in rules.values()
        if r["direction"] == "INGRESS" and "deny" in r and "0.0.0.0/0" in r["source_ranges"]
    ]
    assert deny_ingress and deny_ingress[0]["priority"] >= 65000
    ssh = [r for r in rules.values() if "allow" in r and "22" in block(r, "allow").get("ports", [])]
    assert len(ssh) == 1
    assert [tf.resolve(s) for s in ssh[0]["source_ranges"]] == ["35.235.240.0/20"]


def test_only_processor_and_dashboard_reach_postgres(tf: Config) -> None:
    rules = tf.of_type("google_compute_firewall")
    allowed_5432 = {
        name
        for name, r in rules.items()
        if r["direction"] == "EGRESS" and "allow" in r and "5432" in block(r, "allow")["ports"]
    }
    assert allowed_5432 == {"allow_postgres_from_processor", "allow_postgres_from_dashboard"}
    deny = rules["deny_data_tier_egress"]
    assert "deny" in deny and "target_tags" not in deny and "target_service_accounts" not in deny
    assert all(deny["priority"] > rules[name]["priority"] for name in allowed_5432)
    assert set(deny["destination_ranges"]) == {
        "${var.private_services_cidr}",
        "${local.subnets.data.cidr}",
    }


# --- Cloud SQL ----------------------------------------------------------------------------


def test_sql_is_private_only_with_tls_backups_and_protection(tf: Config) -> None:
    instance = tf.resources[("google_sql_database_instance", "main")]
    settings = block(instance, "settings")
    ip = block(settings, "ip_configuration")
    assert ip["ipv4_enabled"] is False
    assert "authorized_networks" not in ip
    assert ip["private_network"] == "${google_compute_network.main.id}"
    assert ip["ssl_mode"] in {"ENCRYPTED_ONLY", "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"}
    backup = block(settings, "backup_configuration")
    assert backup["enabled"] is True and backup["point_in_time_recovery_enabled"] is True
    assert tf.resolve(instance["deletion_protection"]) is True
    assert tf.resolve(settings["deletion_protection_enabled"]) is True
    assert "day" in block(settings, "maintenance_window")
    assert block(settings, "insights_config")["query_insights_enabled"] is True
    flags = {f["name"]: f["value"] for f in settings["database_flags"]}
    for flag in ("log_connections", "log_disconnections", "log_checkpoints", "log_lock_waits"):
        assert flags.get(flag) == "on", flag


def arguments(body: Any, path: str = "") -> list[tuple[str, Any]]:
    """(dotted path, value) of every argument in a resource body, nested blocks included."""
    found: list[tuple[str, Any]] = []
    if isinstance(body, dict):
        for key, value in body.items():
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                for item in value:
                    found += arguments(item, f"{path}{key}.")
            else:
                found.append((f"{path}{key}", value))
    return found


def test_no_secret_value_reaches_state(tf: Config) -> None:
    """Terraform state keeps every argument of every resource, except write-only ones: a
    secret (a sensitive variable, an ephemeral resource, or a local made of them) may only be
    passed to a `*_wo` argument, each with the `*_wo_version` that says when to send it."""
    tainted = secret_taint(tf)
    assert {("local", "db_password"), ("local", "write_keys")} <= tainted
    for (kind, name), body in tf.resources.items():
        for path, value in arguments(body):
            leaks = references(value) & tainted
            if leaks:
                assert path.endswith("_wo"), f"{kind}.{name}.{path} gets {leaks}"
                parent = body
                for part in path.split(".")[:-1]:
                    parent = parent[part][0]
                assert f"{path.rsplit('.', 1)[-1]}_version" in parent, f"{kind}.{name}.{path}"
    for name, spec in tf.variables.items():
        if spec.get("sensitive") is True:
            assert spec.get("ephemeral") is True, f"variable {name}: sensitive but kept in state"
    assert not {k for k, _ in tf.resources if k == "random_password"}, "generated into state"


def test_database_passwords_reach_cloud_sql_and_secret_manager_together(tf: Config) -> None:
    """A rotation (a bumped version) sends one new value to the user and to its secret."""
    pairs = {
        "app": "db_password",
        "dashboard": "dashboard_db_password",
        "processor": "processor_db_password",
    }
    for user_name, secret in pairs.items():
        user = tf.resources[("google_sql_user", user_name)]
        version = tf.resources[("google_secret_manager_secret_version", secret)]
        assert user["password_wo"] == version["secret_data_wo"], user_name
        assert user["password_wo_version"] == version["secret_data_wo_version"], user_name
    assert tf.variables["db_password"]["default"] is None
    assert "password" not in tf.resolve("${local.database_url}")
    function = block(
        tf.resources[("google_cloudfunctions2_function", "processor")], "service_config"
    )
    (secret_env,) = function["secret_environment_variables"]
    assert secret_env["key"] == "CLICKSTREAM_DB_PASSWORD"
    assert secret_env["secret"] == (
        '${google_secret_manager_secret.secrets["processor_db_password"].secret_id}'
    )


# --- dashboard VM ---------------------------------------------------------------------------


def test_dashboard_vm_is_shielded_private_and_os_login(tf: Config) -> None:
    vm = tf.resources[("google_compute_instance", "dashboard")]
    shielded = block(vm, "shielded_instance_config")
    assert shielded == {
        "enable_secure_boot": True,
        "enable_vtpm": True,
        "enable_integrity_monitoring": True,
    }
    assert "access_config" not in block(vm, "network_interface")
    metadata = vm["metadata"]
    assert metadata["enable-oslogin"] == "TRUE"
    assert metadata["block-project-ssh-keys"] == "TRUE"
    assert block(vm, "service_account")["email"] == "${google_service_account.dashboard.email}"
    assert vm["can_ip_forward"] is False


def test_startup_template_gets_exactly_the_values_it_uses(tf: Config) -> None:
    startup = tf.resources[("google_compute_instance", "dashboard")]["metadata"]["startup-script"]
    passed = set(re.findall(r"\b(\w+)\s*=", startup.split(",", 1)[1]))
    template = (TERRAFORM_DIR / "templates" / "dashboard-startup.sh.tftpl").read_text()
    used = set(re.findall(r"(?<!\$)\$\{(\w+)\}", template))
    assert used == passed
    assert "%{" not in template  # no template directive slipped in from shell syntax


def test_vm_runs_the_dashboard_and_the_operators_tools_from_their_own_archives(
    tf: Config,
) -> None:
    """The dashboard service runs from the venv of the archive holding only the dashboard and
    the contract; migrations at boot and `clickstream-admin` from the operations archive's."""
    installs = startup_installs(tf)
    assert set(installs) == {"dashboard", "operations"}
    assert installs["dashboard"].venv != installs["operations"].venv
    commands = startup_commands(tf)
    service_venv, service = commands["clickstream-dashboard.service"]
    assert service_venv == installs["dashboard"].venv
    assert service[0] == "dashboard"
    options = dict(zip(service[1::2], service[2::2], strict=True))
    assert options["--host"] == "0.0.0.0"  # reached through IAP on the VM's own address
    assert options["--port"] == "${port}"
    rules = tf.of_type("google_compute_firewall").values()
    iap_ports = {p for r in rules if "allow" in r for p in block(r, "allow").get("ports", [])}
    assert "${tostring(local.dashboard_port)}" in iap_ports  # the port passed is the one opened
    operations = installs["operations"].venv
    assert commands["clickstream-migrate.service"] == (operations, ["db", "migrate"])
    assert commands["clickstream-admin"] == (operations, ["$@"])


def test_vm_archives_take_every_file_their_installs_need(tf: Config) -> None:
    """Each archive the VM installs holds exactly the folders its pip install names, and every
    file those distributions read or install (pyproject, readme, modules, package data)."""
    for name, install in startup_installs(tf).items():
        (dynamic,) = tf.data[("archive_file", name)]["dynamic"]
        local = dynamic["source"]["for_each"].removeprefix("${local.").removesuffix("}")
        files = archive_files(tf, local, TERRAFORM_DIR)
        projects = {arg.removeprefix("./").rstrip("./") for arg in install.args}
        needed = {f for project in projects for f in project_files(REPO, project)}
        missing = needed - set(files)
        assert not missing, f"the {name} archive lacks {sorted(missing)}"
        folders = {f.split("/")[0] for f in files if "/" in f}
        assert folders == {f.split("/")[0] for f in needed if "/" in f}, name
        assert "requirements.lock" in files, f"{name}: pip installs with -c requirements.lock"


# --- variables and outputs ----------------------------------------------------------------


def test_seed_variables_are_present_and_used(tf: Config) -> None:
    used = {
        name
        for kind, name in references([*list(tf.resources.values()), tf.locals])
        if kind == "var"
    }
    assert set(tf.variables) >= SEED_VARIABLES
    assert used >= SEED_VARIABLES, SEED_VARIABLES - used


def test_every_variable_is_described_typed_validated_and_used(tf: Config) -> None:
    everything = [tf.resources, tf.data, tf.locals, tf.outputs, tf.files["versions.tf"]]
    used = {name for kind, name in references(everything) if kind == "var"}
    for name, spec in tf.variables.items():
        assert len(spec.get("description", "")) > 10, f"{name}: no description"
        assert "type" in spec, f"{name}: no type"
        assert name in used, f"{name}: declared but never used"
        if spec.get("type") != "bool":
            assert spec.get("validation"), f"{name}: no validation"


def test_tfvars_example_sets_the_seed_variables(tf: Config) -> None:
    example = (TERRAFORM_DIR / "terraform.tfvars.example").read_text()
    assigned = set(re.findall(r"^#?\s*(\w+)\s*=", example, re.M))
    assert assigned >= SEED_VARIABLES
    assert assigned <= set(tf.variables), assigned - set(tf.variables)
    required = {n for n, spec in tf.variables.items() if "default" not in spec}
    active = set(re.findall(r"^(\w+)\s*=", example, re.M))
    assert required <= active, required - active


def secret_taint(tf: Config) -> set[tuple[str, str]]:
    """Names whose value is or derives from a secret: sensitive and ephemeral variables,
    generated passwords (ephemeral or not), and every local computed from one of those."""
    tainted = {("var", n) for n, spec in tf.variables.items() if spec.get("sensitive") is True}
    tainted |= {("var", n) for n, spec in tf.variables.items() if spec.get("ephemeral") is True}
    tainted |= {(f"ephemeral.{k}", n) for k, n in tf.ephemerals}
    tainted |= {(k, n) for (k, n) in tf.resources if k == "random_password"}
    changed = True
    while changed:
        changed = False
        for name, value in tf.locals.items():
            if ("local", name) not in tainted and references(value) & tainted:
                tainted.add(("local", name))
                changed = True
    return tainted


def test_no_output_carries_a_secret(tf: Config) -> None:
    tainted = secret_taint(tf)
    assert {("local", "db_password"), ("local", "write_keys")} <= tainted
    assert tf.outputs, "no outputs"
    for name, output in tf.outputs.items():
        if output.get("sensitive") is True:
            continue
        leaks = references(output["value"]) & tainted
        assert not leaks, f"output {name} carries {leaks}"
        assert not re.search(r"secret_data|\.result\b", str(output["value"])), name


def test_every_reference_names_something_declared(tf: Config) -> None:
    declared = {("var", n) for n in tf.variables} | {("local", n) for n in tf.locals}
    declared |= {(f"data.{k}", n) for k, n in tf.data} | set(tf.resources)
    declared |= {(f"ephemeral.{k}", n) for k, n in tf.ephemerals}
    everything = [tf.resources, tf.data, tf.locals, tf.outputs, tf.variables]
    dangling = references(everything) - declared
    assert not dangling, dangling


def test_references_check_catches_a_dangling_name() -> None:
    # The check above is only as good as `references`: it must see names inside strings.
    found = references({"a": '"${google_pubsub_topic.nope.id}-x"', "b": ["${var.missing}"]})
    assert found == {("google_pubsub_topic", "nope"), ("var", "missing")}


# --- IAM ----------------------------------------------------------------------------------


def test_no_primitive_roles_and_no_default_service_account(tf: Config) -> None:
    text = "\n".join((TERRAFORM_DIR / f).read_text() for f in tf.files)
    assert not re.search(r"roles/(owner|editor|viewer)\b", text)
    assert "-compute@developer.gserviceaccount.com" not in text
    run = block(tf.resources[("google_cloud_run_v2_service", "gateway")], "template")
    assert run["service_account"] == "${google_service_account.gateway.email}"
    function = tf.resources[("google_cloudfunctions2_function", "processor")]
    assert block(function, "service_config")["service_account_email"] == (
        "${google_service_account.processor.email}"
    )
    assert block(function, "build_config")["service_account"] == (
        "${google_service_account.processor_build.id}"
    )


def test_one_service_account_per_component(tf: Config) -> None:
    accounts = tf.of_type("google_service_account")
    assert {"gateway", "processor", "dashboard"} <= set(accounts)
    ids = [a["account_id"] for a in accounts.values()]
    assert len(ids) == len(set(ids))


def test_only_the_gateway_is_public(tf: Config) -> None:
    """Organisation projects refuse allUsers grants (domain-restricted sharing): the gateway is
    public by having Cloud Run's invoker check off, and nothing else is."""
    text = "\n".join((TERRAFORM_DIR / f).read_text() for f in tf.files)
    assert "allUsers" not in text and "allAuthenticatedUsers" not in text
    open_services = {
        name
        for name, body in tf.of_type("google_cloud_run_v2_service").items()
        if body.get("invoker_iam_disabled") is True
    }
    assert open_services == {"gateway"}
    function = block(
        tf.resources[("google_cloudfunctions2_function", "processor")], "service_config"
    )
    assert function["ingress_settings"] == "ALLOW_INTERNAL_ONLY"


# --- Pub/Sub --------------------------------------------------------------------------------


def test_topics_and_subscriptions_match_the_application_defaults(tf: Config) -> None:
    from clickstream_contract.config import Settings

    prefix = tf.variables["name_prefix"]["default"]
    topics = {tf.render(tf.resolve(t["name"])) for t in tf.of_type("google_pubsub_topic").values()}
    assert topics == {
        f"{prefix}-{name}"
        for name in (Settings.events_topic, Settings.bad_events_topic, Settings.dead_letter_topic)
    }
    subscriptions = {tf.render(s["name"]) for s in tf.locals["processor_subscriptions"].values()}
    assert subscriptions == {
        f"{prefix}-{Settings.events_subscription}",
        f"{prefix}-{Settings.bad_events_subscription}",
    }
    # The gateway publishes to the prefixed topics: it is told their names.
    gateway = block(
        block(tf.resources[("google_cloud_run_v2_service", "gateway")], "template"), "containers"
    )
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    assert env["CLICKSTREAM_EVENTS_TOPIC"] == "${google_pubsub_topic.events.name}"
    assert env["CLICKSTREAM_BAD_EVENTS_TOPIC"] == "${google_pubsub_topic.bad_events.name}"


def test_processor_subscriptions_push_with_retry_and_dead_letter(tf: Config) -> None:
    subscription = tf.resources[("google_pubsub_subscription", "processor")]
    push = block(subscription, "push_config")
    assert (
        push["push_endpoint"]
        == "${google_cloudfunctions2_function.processor.service_config[0].uri}"
    )
    assert (
        block(push, "oidc_token")["service_account_email"]
        == "${google_service_account.pubsub_push.email}"
    )
    dead_letter = block(subscription, "dead_letter_policy")
    assert dead_letter["dead_letter_topic"] == "${google_pubsub_topic.dead_letter.id}"
    # Pub/Sub accepts backoffs of 0 to 600 s, and the maximum must not undercut the minimum.
    retry = block(subscription, "retry_policy")
    minimum, maximum = (seconds(retry[key]) for key in ("minimum_backoff", "maximum_backoff"))
    assert 0 <= minimum <= maximum <= 600
    # A push is acknowledged by the function's answer: the deadline must outlast the function.
    function = block(
        tf.resources[("google_cloudfunctions2_function", "processor")], "service_config"
    )
    deadline = tf.resolve(subscription["ack_deadline_seconds"])
    assert tf.resolve(function["timeout_seconds"]) <= deadline <= 600
    assert subscription["message_retention_duration"] == "${var.message_retention_duration}"
    # Dead-lettering acts as Pub/Sub's service agent: publisher on the dead-letter topic,
    # subscriber on each source subscription.
    assert tf.resources[("google_pubsub_topic_iam_member", "dead_letter_publisher")]["member"] == (
        "${local.pubsub_service_agent}"
    )
    subscriber = tf.resources[("google_pubsub_subscription_iam_member", "dead_letter_subscriber")]
    assert subscriber["for_each"] == "${google_pubsub_subscription.processor}"
    assert subscriber["role"] == "roles/pubsub.subscriber"


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)s", duration)
    assert match, f"not a Pub/Sub duration: {duration}"
    return float(match[1])


def variable_bounds(tf: Config, name: str) -> tuple[int, int]:
    """The (low, high) a variable's validation allows: `var.x >= low && var.x <= high`."""
    (validation,) = tf.variables[name]["validation"]
    low = re.search(rf"var\.{name} >= (\d+)", validation["condition"])
    high = re.search(rf"var\.{name} <= (\d+)", validation["condition"])
    assert low and high, validation["condition"]
    return int(low[1]), int(high[1])


def test_local_pubsub_topology_agrees_with_terraform(tf: Config) -> None:
    """`clickstream up` and the tests create the topology themselves (clickstream.pubsub_admin):
    the same subscriptions on the same topics, dead-lettering where Terraform dead-letters."""
    from clickstream.pubsub_admin import MAX_DELIVERY_ATTEMPTS, subscriptions
    from clickstream_contract.config import Settings

    settings = Settings()
    local = {s.name.rsplit("/", 1)[1]: s for s in subscriptions(settings)}
    # Deployed names are the local ones after name_prefix.
    prefix = f"{tf.variables['name_prefix']['default']}-"

    def unprefixed(name: str) -> str:
        rendered = tf.render(tf.resolve(name))
        assert rendered.startswith(prefix), rendered
        return rendered.removeprefix(prefix)

    topics = {
        f"${{google_pubsub_topic.{key}.id}}": unprefixed(topic["name"])
        for key, topic in tf.of_type("google_pubsub_topic").items()
    }
    deployed = {
        unprefixed(s["name"]): topics[s["topic"]]
        for s in tf.locals["processor_subscriptions"].values()
    }
    hold = tf.resources[("google_pubsub_subscription", "dead_letter_hold")]
    deployed[unprefixed(hold["name"])] = topics[hold["topic"]]
    assert {name: s.topic.rsplit("/", 1)[1] for name, s in local.items()} == deployed
    dead_letter = block(
        tf.resources[("google_pubsub_subscription", "processor")], "dead_letter_policy"
    )
    assert topics[dead_letter["dead_letter_topic"]] == settings.dead_letter_topic
    events = local[settings.events_subscription].dead_letter_policy
    assert events.dead_letter_topic.rsplit("/", 1)[1] == settings.dead_letter_topic
    # Both within what Terraform (and Pub/Sub) allow.
    low, high = variable_bounds(tf, "max_delivery_attempts")
    assert low <= MAX_DELIVERY_ATTEMPTS <= high
    assert low <= tf.variables["max_delivery_attempts"]["default"] <= high


def test_a_pubsub_push_reaches_a_cloudevent_function(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The push subscriptions post Pub/Sub's JSON wrapper, not a CloudEvent; the Functions
    Framework turns it into the CloudEvent `processor.function.message_from` reads."""
    from functions_framework import create_app

    from processor.function import message_from

    # The framework imports the source as a module named after the file and extends sys.path.
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "push_probe", raising=False)
    source = tmp_path / "push_probe.py"
    source.write_text(
        "import functions_framework\nSEEN = []\n"
        "@functions_framework.cloud_event\ndef handler(event):\n    SEEN.append(event)\n"
    )
    app = create_app("handler", str(source), "cloudevent")
    body = {
        "message": {
            "data": base64.b64encode(b"\x81\xa1v\x01").decode(),
            "attributes": {"kind": "events"},
            "messageId": "4242",
            "publishTime": "2025-01-02T03:04:05.678Z",
        },
        "subscription": "projects/p/subscriptions/events-processor",
    }
    response = app.test_client().post("/", json=body)
    assert response.status_code == 200
    (event,) = sys.modules["push_probe"].SEEN
    message = message_from(event)
    assert (message.message_id, message.data, message.attributes) == (
        "4242",
        b"\x81\xa1v\x01",
        {"kind": "events"},
    )


# --- the application the configuration deploys ----------------------------------------------


def environment_names(tf: Config) -> set[str]:
    gateway = block(
        block(tf.resources[("google_cloud_run_v2_service", "gateway")], "template"), "containers"
    )
    names = {e["name"] for e in gateway["env"]}
    function = block(
        tf.resources[("google_cloudfunctions2_function", "processor")], "service_config"
    )
    names |= set(function["environment_variables"])
    names |= {e["key"] for e in function["secret_environment_variables"]}
    return names


def test_every_environment_variable_is_read_by_the_code(tf: Config) -> None:
    names = environment_names(tf)
    assert {"CLICKSTREAM_WRITE_KEYS", "DATABASE_URL", "CLICKSTREAM_BIGQUERY_DATASET"} <= names
    sources = "\n".join(
        p.read_text()
        for package in ("clickstream_contract", "gateway", "processor", "dashboard")
        for p in (REPO / package).rglob("*.py")
    )
    unread = {
        n
        for n in names
        if f'"{n}"' not in sources and f"_{n.removeprefix('CLICKSTREAM_GATEWAY_')}" not in sources
    }
    assert not unread, unread


def bigquery_columns(path: Path) -> list[tuple[str, str, str]]:
    from processor.bigquery_schema import LEGACY_TYPE_NAMES

    fields = json.loads(path.read_text())
    return [(f["name"], LEGACY_TYPE_NAMES.get(f["type"], f["type"]), f["mode"]) for f in fields]


def test_bigquery_schemas_match_the_processor_records() -> None:
    from processor.bigquery_schema import table_definitions

    for table in table_definitions("PROJECT", "DATASET"):
        if table.view_query is not None:
            continue
        expected = [(f.name, f.field_type, f.mode) for f in table.schema]
        path = TERRAFORM_DIR / "bigquery" / f"{table.table_id}.schema.json"
        assert bigquery_columns(path) == expected, table.table_id


def test_bigquery_tables_and_views_match_the_processor_definitions(tf: Config) -> None:
    from processor.bigquery_schema import table_definitions

    definitions = {t.table_id: t for t in table_definitions("PROJECT", "DATASET")}
    tables = {
        tf.resolve(t["table_id"]): t
        for t in tf.of_type("google_bigquery_table").values()
        if t["dataset_id"] == "${google_bigquery_dataset.main.dataset_id}"
    }
    assert set(tables) == set(definitions)
    for table_id, definition in definitions.items():
        table = tables[table_id]
        if definition.view_query is not None:
            # Terraform deploys the very file the processor reads.
            query = block(table, "view")["query"]
            call = re.fullmatch(
                r'\$\{templatefile\("\$\{local.repo_root\}/processor/bigquery_views/(\w+)\.sql",'
                r"\s*\{(.*)\}\)\}",
                query,
                re.S,
            )
            assert call and call[1] == table_id, query
            assert re.findall(r"(\w+)\s*=", call[2]) == ["project", "dataset"], query
            continue
        partitioning = block(table, "time_partitioning")
        assert partitioning["type"] == definition.time_partitioning.type_
        assert partitioning["field"] == definition.time_partitioning.field
        assert table.get("clustering") == definition.clustering_fields


def test_raw_data_is_read_by_its_owner_and_writer_only_and_analysts_get_views(
    tf: Config,
) -> None:
    """Raw events carry client addresses and user ids: on their dataset only the operator
    (owner), the processor (writer) and customer_daily's scheduled refresh (reader) are
    granted, besides the authorised views; a group of
    the organisation reads the analyst dataset, whose views leave out every identifying
    column their source has."""
    access = tf.of_type("google_bigquery_dataset_access")
    main = "${google_bigquery_dataset.main.dataset_id}"
    analyst = "${google_bigquery_dataset.analyst.dataset_id}"
    on_main = {
        (a.get("role"), a.get("user_by_email") or a.get("group_by_email") or a.get("domain"))
        for a in access.values()
        if a["dataset_id"] == main and "view" not in a
    }
    assert on_main == {
        ("OWNER", "${var.admin_email}"),
        ("WRITER", "${google_service_account.processor.email}"),
        ("READER", "${google_service_account.rollups.email}"),  # customer_daily's refresh
    }
    assert not any("domain" in a or "special_group" in a for a in access.values())
    analysts = access["analysts"]
    assert (analysts["dataset_id"], analysts["group_by_email"]) == (
        analyst,
        "${var.analysts_group}",
    )
    for dataset in ("main", "analyst"):
        assert "access" not in tf.resources[("google_bigquery_dataset", dataset)]
    # Every analyst view is authorised on the raw dataset, and shows no identifying column.
    authorised = access["analyst_views"]
    assert authorised["for_each"] == "${google_bigquery_table.analyst}"
    assert authorised["dataset_id"] == main and block(authorised, "view")["dataset_id"] == analyst
    views = tf.locals["analyst_views"]
    assert set(views) >= {"events", "customer_analytics"}
    for name, view in views.items():
        source = view["source"].removeprefix("${google_bigquery_table.").split(".")[0]
        shown = view_columns(source) - set(view["leave_out"])
        assert not shown & IDENTIFYING_COLUMNS, (name, shown & IDENTIFYING_COLUMNS)
        assert set(view["leave_out"]) <= view_columns(source), name  # EXCEPT must name columns


def test_customer_daily_is_refreshed_by_the_processors_statement_with_only_what_it_needs(
    tf: Config,
) -> None:
    """A scheduled query runs processor/bigquery_views/customer_daily_merge.sql (the statement
    the emulator tests run), given every placeholder the file has, often enough that no day
    leaves the recomputed window unrefreshed; its account may read the raw dataset, write
    customer_daily and no other table, and every grant exists before the first run."""
    import string

    (transfer,) = tf.of_type("google_bigquery_data_transfer_config").values()
    assert transfer["data_source_id"] == "scheduled_query"
    call = re.fullmatch(
        r'\$\{templatefile\("\$\{local.repo_root\}/processor/bigquery_views/(\w+\.sql)",'
        r"\s*\{(.*)\}\)\}",
        transfer["params"]["query"],
        re.S,
    )
    assert call, transfer["params"]["query"]
    source = (REPO / "processor" / "bigquery_views" / call[1]).read_text()
    assert "MERGE `${project}.${dataset}.customer_daily`" in source
    given = re.findall(r"(\w+)\s*=", call[2])
    assert set(string.Template(source).get_identifiers()) == set(given)
    assert "@run_time" in source  # set by the scheduler to the run's scheduled time
    hours = tf.resolve("${var.customer_daily_refresh_hours}")
    days = tf.resolve("${var.customer_daily_refresh_days}")
    assert transfer["schedule"] == "every ${var.customer_daily_refresh_hours} hours"
    assert hours < 24 * days

    account = transfer["service_account_name"]
    assert account == "${google_service_account.rollups.email}"
    member = f"serviceAccount:{account}"
    granted = {
        (kind, name): body
        for (kind, name), body in tf.resources.items()
        if kind.endswith("_iam_member") and body["member"] == member
    }
    on_tables = {
        (body["table_id"], body["role"])
        for (kind, _), body in granted.items()
        if kind == "google_bigquery_table_iam_member"
    }
    assert on_tables == {
        ("${google_bigquery_table.customer_daily.table_id}", "roles/bigquery.dataEditor")
    }
    project_roles = {
        body["role"] for (kind, _), body in granted.items() if kind == "google_project_iam_member"
    }
    assert project_roles == {"roles/bigquery.jobUser"}
    readers = {
        name
        for (kind, name), body in tf.resources.items()
        if kind == "google_bigquery_dataset_access" and body.get("user_by_email") == account
    }
    assert {tf.resources[("google_bigquery_dataset_access", n)]["role"] for n in readers} == {
        "READER"
    }
    token = tf.resources[
        ("google_service_account_iam_member", "transfer_agent_mints_rollups_tokens")
    ]
    assert token["service_account_id"] == "${google_service_account.rollups.name}"
    assert "bigquerydatatransfer.googleapis.com" in tf.locals["apis"]
    waits_for = references(transfer["depends_on"])
    assert (
        set(granted)
        | {("google_bigquery_dataset_access", n) for n in readers}
        | {("google_service_account_iam_member", "transfer_agent_mints_rollups_tokens")}
        <= waits_for
    )


def templatefile_arguments(call: str) -> dict[str, str]:
    """The variables a `${templatefile("...", { name = value, ... })}` expression passes."""
    match = re.fullmatch(r'\$\{templatefile\("[^"]+",\s*\{(.*)\}\)\}', call, re.S)
    assert match, call
    return dict(re.findall(r"(\w+)\s*=\s*([^,\n]+?)\s*(?:,|\n|$)", match[1]))


def test_the_function_prunes_after_pubsub_would_redeliver(tf: Config) -> None:
    """The retention the function prunes with (processor.db.retention_from_env) is given in
    days and must outlast Pub/Sub's message retention: a redelivery after its dedup keys were
    pruned would count its events again."""
    from processor.db import RETENTION_ENV, parse_duration

    function = block(
        tf.resources[("google_cloudfunctions2_function", "processor")], "service_config"
    )
    setting = function["environment_variables"][RETENTION_ENV]
    assert setting == "${var.retention_days}d"
    retention = parse_duration(f"{tf.variables['retention_days']['default']}d")
    pubsub = seconds(tf.variables["message_retention_duration"]["default"])
    assert retention.total_seconds() > pubsub
    (validation,) = tf.variables["retention_days"]["validation"]
    assert (
        'var.retention_days * 86400 > tonumber(trimsuffix(var.message_retention_duration, "s"))'
        in validation["condition"]
    )


def test_every_part_that_converts_or_shows_amounts_gets_one_reporting_currency(
    tf: Config,
) -> None:
    """The processor (which converts), the dashboard service (which labels), the operator's
    `clickstream` on the VM (`rates load`, which stores rates into it) and customer_daily's
    scheduled query (which sums converted amounts in it) all take var.reporting_currency: a
    deployment never sums in one currency and shows another."""
    setting = "${var.reporting_currency}"
    variable = tf.variables["reporting_currency"]
    assert tf.resolve(setting) == "EUR"  # the default, as the code's (Settings)
    (validation,) = variable["validation"]
    pattern = re.fullmatch(
        r'\$\{can\(regex\("(.+)", var\.reporting_currency\)\)\}', validation["condition"]
    )
    assert pattern, validation["condition"]
    accepted = [
        code for code in ("EUR", "USD", "eur", "EURO", "E1R", "") if re.search(pattern[1], code)
    ]
    assert accepted == ["EUR", "USD"]

    function = block(
        tf.resources[("google_cloudfunctions2_function", "processor")], "service_config"
    )
    assert function["environment_variables"]["CLICKSTREAM_REPORTING_CURRENCY"] == setting

    startup = tf.resources[("google_compute_instance", "dashboard")]["metadata"]["startup-script"]
    assert templatefile_arguments(startup)["reporting_currency"] == "var.reporting_currency"
    template = (TERRAFORM_DIR / "templates" / "dashboard-startup.sh.tftpl").read_text()
    env_files = dict(
        re.findall(r"cat > /etc/clickstream/(\w+)\.env <<'ENV'\n(.*?)\nENV", template, re.S)
    )
    assert set(env_files) == {"service", "admin"}  # the dashboard and `clickstream-admin`
    for name, body in env_files.items():
        assert "CLICKSTREAM_REPORTING_CURRENCY=${reporting_currency}" in body.splitlines(), name

    (transfer,) = tf.of_type("google_bigquery_data_transfer_config").values()
    passed = templatefile_arguments(transfer["params"]["query"])
    assert passed["reporting_currency"] == "var.reporting_currency"


# What identifies a person in the events (processor/bigquery_schema.py's columns).
# visitor_key is the user id when one is known.
IDENTIFYING_COLUMNS = {"client_ip", "user_agent", "user_id", "anonymous_id", "visitor_key"}


def view_columns(table: str) -> set[str]:
    """The columns a table or view of the raw dataset has: schema files for tables, the select
    list's names for views (events_dedup selects `*` from events)."""
    if table == "events_dedup":
        table = "events"
    schema = TERRAFORM_DIR / "bigquery" / f"{table}.schema.json"
    if schema.exists():
        return {field["name"] for field in json.loads(schema.read_text())}
    query = (REPO / "processor" / "bigquery_views" / f"{table}.sql").read_text()
    select = re.split(r"^FROM", query, maxsplit=1, flags=re.M)[0]  # the outer FROM
    return set(re.findall(r"(?:AS\s+)?(\w+)\s*,?\s*$", select, re.M)) - {"SELECT"}


# --- the function's source archive ------------------------------------------------------------


def first_party_imports(entry: Path) -> tuple[set[str], set[Path]]:
    """Third-party modules (dotted) imported by `entry` and every first-party module it reaches,
    at any depth and inside functions too, leaving out `if TYPE_CHECKING:` blocks; and the
    first-party files it reaches."""
    first_party = FIRST_PARTY
    seen_files: set[Path] = set()
    third_party: set[str] = set()
    pending = [entry]
    while pending:
        path = pending.pop()
        if path in seen_files:
            continue
        seen_files.add(path)
        tree = ast.parse(path.read_text())
        skipped = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in node.body
            for n in ast.walk(child)
        }
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                # `from a.b import c`: c is a module or a name in a.b; resolve the longer first.
                names = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in first_party:
                    parts = name.split(".")
                    for depth in (len(parts), len(parts) - 1):
                        module = REPO.joinpath(*parts[:depth])
                        for candidate in (module.with_suffix(".py"), module / "__init__.py"):
                            if candidate.exists():
                                pending.append(candidate)
                elif top not in sys.stdlib_module_names and top != "__future__":
                    third_party.add(name)
    return third_party, seen_files - {entry}


def function_requirements() -> dict[str, Requirement]:
    lines = (TERRAFORM_DIR / "function" / "requirements.txt").read_text().splitlines()
    parsed = [Requirement(line) for line in lines if line.strip() and line[0] not in "#-"]
    return {canonicalize_name(r.name): r for r in parsed}


def test_function_requirements_cover_what_the_processor_imports() -> None:
    entry = TERRAFORM_DIR / "function" / "main.py"
    assert "from processor.function import process_pubsub" in entry.read_text()
    imported, reached = first_party_imports(entry)
    assert "asyncpg" in imported and "functions_framework" in imported  # the walk went deep
    needed = {distribution_of(m) or m for m in imported}
    missing = needed - installed_by(str(r) for r in function_requirements().values())
    assert not missing, f"terraform/function/requirements.txt lacks {sorted(missing)}"
    # What the function imports stays within the two packages its archive holds.
    outside = {p.relative_to(REPO).parts[0] for p in reached} - {
        "processor",
        "clickstream_contract",
    }
    assert not outside, f"the function imports {sorted(outside)}, which its archive lacks"


def test_function_requirements_pin_the_dependencies_of_its_packages_to_the_lock() -> None:
    """requirements.txt is what the function's build installs: the dependencies of the two
    packages the archive holds as sources (the contract itself aside), each at the version
    requirements.lock gives every other install."""
    declared: dict[str, Requirement] = {}
    for package in ("processor", "clickstream_contract"):
        pyproject = tomllib.loads((REPO / package / "pyproject.toml").read_text())
        for requirement in map(Requirement, pyproject["project"]["dependencies"]):
            declared.setdefault(canonicalize_name(requirement.name), requirement)
    declared.pop("clickstream-contract")  # in the archive, as sources
    lock = locked_versions()
    requirements = function_requirements()
    assert set(requirements) == set(declared)
    for name, requirement in requirements.items():
        assert requirement.extras == declared[name].extras, name
        assert str(requirement.specifier) == f"=={lock[name]}", name
        assert declared[name].specifier.contains(lock[name]), name


def locked_versions() -> dict[str, str]:
    lines = (REPO / "requirements.lock").read_text().splitlines()
    pins = (line.split("==") for line in lines if line.strip() and not line.startswith("#"))
    return {canonicalize_name(name): version for name, version in pins}


# --- what a first apply, the smoke test and destroy need ---------------------------------------


def test_alerts_select_cloud_run_series_by_short_service_name(tf: Config) -> None:
    """Cloud Run labels its series with the short service name; a gen2 function's service has
    the function's name, while `service_config[0].service` is a full resource path that never
    matches, so an alert on it could never fire."""
    named = {
        "${google_cloud_run_v2_service.gateway.name}",
        "${google_cloudfunctions2_function.processor.name}",
    }
    seen = set()
    for name, policy in tf.of_type("google_monitoring_alert_policy").items():
        for condition in policy["conditions"]:
            text = str(condition)
            for value in re.findall(r'service_name\s*=\s*\\*"(\$\{[^}]+\})', text):
                assert value in named, (name, value)
                seen.add(value)
    assert seen == named  # both services are watched


def secrets_read_by(body: Any) -> set[str]:
    """The secrets (keys of secrets.tf's `secrets`) an expression names."""
    return set(re.findall(r'google_secret_manager_secret\.secrets\["(\w+)"\]', str(body)))


def test_whatever_reads_a_secret_waits_for_a_version_of_it(tf: Config) -> None:
    """A service reading a secret at `latest` fails to start before a version exists."""
    readers = 0
    for kind in ("google_cloud_run_v2_service", "google_cloudfunctions2_function"):
        for name, body in tf.of_type(kind).items():
            waits = {
                dependency.removeprefix("${google_secret_manager_secret_version.").rstrip("}")
                for dependency in body.get("depends_on", [])
            }
            read = secrets_read_by({k: v for k, v in body.items() if k != "depends_on"})
            assert read <= waits, f"{kind}.{name} reads {read - waits} before a version exists"
            readers += bool(read)
    vm = tf.resources[("google_compute_instance", "dashboard")]
    waits = {d.split(".")[1].rstrip("}") for d in vm["depends_on"] if "secret_version" in d}
    assert secrets_read_by(vm["metadata"]) <= waits
    assert readers == 2
    assert secrets_read_by('google_secret_manager_secret.secrets["a"].id') == {"a"}


def test_builds_run_as_their_own_accounts_and_push_to_their_own_repository(tf: Config) -> None:
    """New organisation projects do not give Cloud Build's default account what a build needs:
    each build runs as an account of ours that may write logs and push to one repository."""
    function = block(tf.resources[("google_cloudfunctions2_function", "processor")], "build_config")
    assert function["service_account"] == "${google_service_account.processor_build.id}"
    assert function["docker_repository"] == (
        '${google_artifact_registry_repository.images["processor"].id}'
    )
    builders = tf.locals["builders"]
    assert builders["processor_build"]["repository"] == (
        '${google_artifact_registry_repository.images["processor"].name}'
    )
    assert builders["image_builder"]["repository"] == (
        '${google_artifact_registry_repository.images["gateway"].name}'
    )
    push = tf.resources[("google_artifact_registry_repository_iam_member", "builders_push")]
    assert push["role"] == "roles/artifactregistry.writer"
    assert push["for_each"] == "${local.builders}"
    # No project-wide Artifact Registry role for anyone.
    for body in tf.of_type("google_project_iam_member").values():
        assert "artifactregistry" not in str(body.get("role")), body
    reads = tf.resources[("google_storage_bucket_iam_member", "image_builder_reads_builds")]
    assert reads["bucket"] == "${google_storage_bucket.builds.name}"
    # The guide builds with that account and that bucket.
    guide = (TERRAFORM_DIR / "README.md").read_text()
    submit = re.search(r"gcloud builds submit(?:[^\n]*\\\n)*[^\n]*", guide)
    assert submit, "the guide builds the image with Cloud Build"
    account = tf.render(tf.resources[("google_service_account", "image_builder")]["account_id"])
    bucket = tf.render(tf.resources[("google_storage_bucket", "builds")]["name"])
    as_guide_writes = {
        "clickstream": "$PREFIX",  # the guide's shell variables for the defaults
        "${var.project_id}": "$PROJECT",
    }
    for default, variable in as_guide_writes.items():
        account, bucket = account.replace(default, variable), bucket.replace(default, variable)
    assert f'--service-account="projects/$PROJECT/serviceAccounts/{account}@' in submit[0]
    assert f'--gcs-source-staging-dir="gs://{bucket}/' in submit[0]


def test_apis_cover_what_the_configuration_calls_and_service_agents_exist_first(
    tf: Config,
) -> None:
    apis = set(tf.locals["apis"].removeprefix("${toset(").removesuffix(")}").split('"')[1::2])
    # data.google_project, project IAM members and audit configs go through Resource Manager.
    assert tf.data.get(("google_project", "this")) is not None
    assert "cloudresourcemanager.googleapis.com" in apis
    kinds = {kind for kind, _ in tf.resources}
    for kind, api in (
        ("google_pubsub_topic", "pubsub"),
        ("google_sql_database_instance", "sqladmin"),
        ("google_cloudfunctions2_function", "cloudfunctions"),
        ("google_cloud_run_v2_service", "run"),
        ("google_secret_manager_secret", "secretmanager"),
        ("google_compute_network", "compute"),
        ("google_billing_budget", "billingbudgets"),
    ):
        assert kind in kinds and f"{api}.googleapis.com" in apis, kind
    # Grants to Pub/Sub's service agent go through the resource that creates it.
    identity = tf.resources[("google_project_service_identity", "pubsub")]
    assert identity["service"] == "pubsub.googleapis.com"
    assert "google_project_service_identity.pubsub" in tf.locals["pubsub_service_agent"]
    assert "gcp-sa-pubsub" not in json.dumps(tf.locals)


def test_destroy_abandons_what_goes_with_the_instance_and_the_network(tf: Config) -> None:
    """Deleting the SQL user (owner of the migrated tables), the database, or the peering Cloud
    SQL still uses would fail a destroy: they are left to go with the instance and network."""
    for kind in (
        "google_sql_user",
        "google_sql_database",
        "google_service_networking_connection",
    ):
        for name, body in tf.of_type(kind).items():
            assert body.get("deletion_policy") == "ABANDON", f"{kind}.{name}"
    guide = (TERRAFORM_DIR / "README.md").read_text()
    destroy = guide[guide.index("## Destroy") :]
    assert "terraform destroy" in destroy and "subnet" in destroy and "wait" in destroy.lower()


# Every name built on name_prefix, with the longest length Google accepts for it.
NAME_LIMITS = {
    "google_service_account": ("account_id", 30),
    "google_cloud_run_v2_service": ("name", 49),
    "google_cloudfunctions2_function": ("name", 63),
    "google_storage_bucket": ("name", 63),
    "google_pubsub_topic": ("name", 255),
    "google_pubsub_subscription": ("name", 255),
    "google_compute_firewall": ("name", 63),
    "google_compute_subnetwork": ("name", 63),
    "google_secret_manager_secret": ("secret_id", 255),
    "google_artifact_registry_repository": ("repository_id", 63),
}


def longest_accepted(tf: Config, variable: str, alphabet: str = "a") -> str:
    """The longest value a variable's validation regex accepts (Python's re reads the simple
    patterns used here as RE2 does)."""
    (validation,) = tf.variables[variable]["validation"]
    pattern = re.search(r'regex\("(.+?)", var\.', validation["condition"])
    assert pattern, validation["condition"]
    regex = re.compile(pattern[1].replace("\\\\", "\\"))
    accepted = [alphabet * n for n in range(1, 80) if regex.fullmatch(alphabet * n)]
    assert accepted, variable
    return accepted[-1]


def test_names_fit_googles_limits_for_every_accepted_prefix(tf: Config) -> None:
    prefix = longest_accepted(tf, "name_prefix")
    project = longest_accepted(tf, "project_id")
    for kind, (attribute, limit) in NAME_LIMITS.items():
        for name, body in tf.of_type(kind).items():
            value = body.get(attribute)
            if value is None and "for_each" in body:
                continue  # names from the for_each map, checked below
            text = tf.render(tf.resolve(value))
            text = text.replace(tf.variables["name_prefix"]["default"], prefix)
            text = text.replace("${var.project_id}", project)
            text = text.replace("${each.value.name}", "")
            assert "${" not in text or "each." in text, (kind, name, text)
            assert len(text) <= limit, f"{kind}.{name}: {text!r} is longer than {limit}"
    assert len(f"{prefix}-processor-build") <= 30  # the longest service account id
    assert not re.search(r"-$", prefix)


def test_the_sql_edition_follows_the_tier(tf: Config) -> None:
    """db-perf-optimized-* tiers exist only in ENTERPRISE_PLUS, the custom ones in ENTERPRISE."""
    settings = block(tf.resources[("google_sql_database_instance", "main")], "settings")
    edition = re.fullmatch(
        r'\$\{startswith\(var\.db_tier, "([^"]+)"\) \? "(\w+)" : "(\w+)"\}', settings["edition"]
    )
    assert edition, settings["edition"]
    (validation,) = tf.variables["db_tier"]["validation"]
    pattern = re.search(r'regex\("(.+?)", var\.', validation["condition"])
    assert pattern
    accepts = re.compile(pattern[1].replace("\\\\", "\\"))
    for tier, expected in (
        ("db-custom-2-7680", "ENTERPRISE"),
        ("db-perf-optimized-N-8", "ENTERPRISE_PLUS"),
    ):
        assert accepts.fullmatch(tier), tier
        chosen = edition[2] if tier.startswith(edition[1]) else edition[3]
        assert chosen == expected, tier


def test_the_dashboard_password_hash_is_validated_as_the_dashboard_reads_it(tf: Config) -> None:
    from dashboard.auth import check_password_hash, hash_password

    (validation,) = tf.variables["dashboard_password_hash"]["validation"]
    pattern = re.search(r'regex\("(.+?)", var\.', validation["condition"])
    assert pattern
    accepts = re.compile(pattern[1].replace("\\\\", "\\"))
    real = hash_password("a long enough password")
    assert accepts.fullmatch(real)
    example = (TERRAFORM_DIR / "terraform.tfvars.example").read_text()
    placeholder = re.search(r'^dashboard_password_hash\s*=\s*"([^"]*)"', example, re.M)
    if placeholder:  # an active placeholder must fail here, as the dashboard refuses it
        assert not accepts.fullmatch(placeholder[1])
        with pytest.raises(ValueError):
            check_password_hash(placeholder[1])
    for refused in ("", "x" * 40, "scrypt$1$2$3$salt"):
        assert not accepts.fullmatch(refused), refused


def test_pgaudit_is_configured_and_its_extension_created(tf: Config) -> None:
    settings = block(tf.resources[("google_sql_database_instance", "main")], "settings")
    flags = {f["name"]: f["value"] for f in settings["database_flags"]}
    assert flags["cloudsql.enable_pgaudit"] == "on"
    logged = set(flags["pgaudit.log"].split(","))
    assert logged and "read" not in logged and "all" not in logged  # no customer data
    migrations = (REPO / "processor" / "migrations").glob("*.sql")
    assert any("CREATE EXTENSION IF NOT EXISTS pgaudit" in m.read_text() for m in migrations)


def test_clients_verify_the_database_server_and_the_dashboard_reads_as_its_own_user(
    tf: Config,
) -> None:
    from clickstream_contract.config import DB_SERVER_CA_ENV

    for local in ("database_url", "dashboard_database_url"):
        assert tf.locals[local].endswith("?sslmode=verify-ca"), local
    function = block(
        tf.resources[("google_cloudfunctions2_function", "processor")], "service_config"
    )
    assert function["environment_variables"][DB_SERVER_CA_ENV] == "${local.sql_server_ca}"
    assert "server_ca_cert" in tf.locals["sql_server_ca"]
    # The dashboard's user is the role the migration grants read access to.
    user = tf.resources[("google_sql_user", "dashboard")]
    role = tf.resolve(user["name"])
    migration = (REPO / "processor" / "migrations" / "301_dashboard_reader.sql").read_text()
    assert f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};" in migration
    assert f"//{role}@" in tf.render(tf.locals["dashboard_database_url"])
    # ... and the dashboard service, not the migrations, connects as it.
    template = (TERRAFORM_DIR / "templates" / "dashboard-startup.sh.tftpl").read_text()
    service = re.search(
        r"^ExecStart=\S+/with-secrets (\w+) \S+/venv/bin/clickstream dashboard", template, re.M
    )
    assert service
    env = re.search(
        rf"/etc/clickstream/{service[1]}\.env <<'ENV'\n(.*?)^ENV$", template, re.M | re.S
    )
    assert env and "DATABASE_URL=${dashboard_database_url}" in env[1]


def test_the_processor_writes_as_a_user_that_cannot_migrate(tf: Config) -> None:
    """The VM's migrate service connects as the schema owner; the function as another user,
    which a migration makes a member of the write-only role, with a password it alone reads."""
    template = (TERRAFORM_DIR / "templates" / "dashboard-startup.sh.tftpl").read_text()
    migrating = re.search(r"with-secrets (\w+) \S+/clickstream db migrate$", template, re.M)
    assert migrating
    env = re.search(
        rf"/etc/clickstream/{migrating[1]}\.env <<'ENV'\n(.*?)^ENV$", template, re.M | re.S
    )
    assert env
    url_var = re.search(r"^DATABASE_URL=\$\{(\w+)\}$", env[1], re.M)
    secret_var = re.search(r"^CLICKSTREAM_SECRET_DB_PASSWORD=\$\{(\w+)\}$", env[1], re.M)
    assert url_var and secret_var
    dashboard_tf = (TERRAFORM_DIR / "dashboard.tf").read_text()
    url_local = re.search(rf"^\s*{url_var[1]}\s*=\s*local\.(\w+)$", dashboard_tf, re.M)
    secret_ref = re.search(rf"^\s*{secret_var[1]}\s*=\s*(\S+)$", dashboard_tf, re.M)
    assert url_local and secret_ref

    def user_of(url: str) -> str:
        found = re.search(r"^postgresql://([a-z0-9_]+)@", tf.render(url))
        assert found, url
        return found[1]

    migrator = user_of(tf.locals[url_local[1]])
    function = block(
        tf.resources[("google_cloudfunctions2_function", "processor")], "service_config"
    )
    processor = user_of(function["environment_variables"]["DATABASE_URL"])
    assert processor != migrator
    users = {tf.render(u["name"]) for u in tf.of_type("google_sql_user").values()}
    assert {processor, migrator} <= users
    migrations = "".join(p.read_text() for p in (REPO / "processor" / "migrations").glob("*.sql"))
    assert re.search(rf"GRANT clickstream_processor TO {processor};", migrations)
    (secret_env,) = function["secret_environment_variables"]
    migrator_secret = secret_ref[1]  # google_secret_manager_secret.secrets["..."].secret_id
    assert secret_env["secret"] != "${" + migrator_secret + "}"
    processor_reads = {
        reader["secret"]
        for reader in tf.locals["secret_readers"].values()
        if "service_account.processor." in reader["account"]
    }
    assert "${" + migrator_secret.replace(".secret_id", ".id") + "}" not in processor_reads


def test_the_gateway_can_sit_behind_a_load_balancer_with_cloud_armor(tf: Config) -> None:
    gateway = tf.resources[("google_cloud_run_v2_service", "gateway")]
    assert gateway["ingress"] == (
        '${local.load_balanced ? "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER" : "INGRESS_TRAFFIC_ALL"}'
    )
    assert tf.locals["load_balanced"] == "${var.gateway_domain != null}"
    neg = tf.resources[("google_compute_region_network_endpoint_group", "gateway")]
    assert neg["network_endpoint_type"] == "SERVERLESS"
    assert block(neg, "cloud_run")["service"] == "${google_cloud_run_v2_service.gateway.name}"
    backend = tf.resources[("google_compute_backend_service", "gateway")]
    assert backend["security_policy"] == "${google_compute_security_policy.gateway[0].id}"
    policy = tf.resources[("google_compute_security_policy", "gateway")]
    throttles = [r for r in policy["rule"] if r["action"] in {"throttle", "rate_based_ban"}]
    assert throttles and block(throttles[0], "rate_limit_options")["enforce_on_key"] == "IP"
    # Every load balancer resource exists only when the variable asks for it.
    for kind, name in tf.resources:
        if name == "gateway" and kind.startswith("google_compute_"):
            assert tf.resources[(kind, name)]["count"] == "${local.load_balancer}", kind


def test_the_guide_checks_health_on_paths_the_public_url_serves(tf: Config) -> None:
    """Cloud Run's front end answers some paths ending in `z` itself (Google's 404): the guide
    calls only paths the gateway serves that do not end in `z`, and so do the probes."""
    from gateway.openapi import openapi_document
    from gateway.settings import GatewaySettings

    served = set(openapi_document(GatewaySettings())["paths"])
    guide = (TERRAFORM_DIR / "README.md").read_text()
    paths = re.findall(r'"\$GATEWAY(/[\w/]*)"', guide)
    assert "/health" in paths, "the guide checks the gateway's health"
    for path in paths:
        assert path in served and not path.endswith("z"), path
    container = block(
        block(tf.resources[("google_cloud_run_v2_service", "gateway")], "template"), "containers"
    )
    for probe in ("startup_probe", "liveness_probe"):
        assert block(block(container, probe), "http_get")["path"] in served, probe
