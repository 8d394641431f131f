"""Kafka on Kubernetes, secured: one Strimzi KafkaUser per function whose ACLs allow only its
own topics and groups (derived from the steps' declarations), its password wired into the
function's Service and KafkaSources, every dead-letter sink authenticated, and topics
replicated 3 times with min ISR 2. The manifests are checked against Strimzi's KafkaUser CRD
by test_manifests.py (unknown fields failing)."""

from __future__ import annotations

from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from quotaflow.deploy.kafka_users import accesses, source_group, strimzi_users, user_name
from quotaflow.events.catalog import topic_specs
from quotaflow.runtime.steps import CONSUMER_STEPS, load_step
from tests.conftest import REPO
from tests.deploy.schemas import by_kind, crd_validator, func_yamls

PREFIX = "quotaflow."
CA_SECRET = ("quotaflow-cluster-ca-cert", "ca.crt")


def users() -> dict[str, dict[str, Any]]:
    return {u["metadata"]["name"]: u for u in by_kind("KafkaUser")}


def allowed(user: dict[str, Any], operation: str, kind: str, name: str) -> bool:
    """Whether the user's ACLs allow `operation` on the resource (literal or prefix)."""
    for acl in user["spec"]["authorization"]["acls"]:
        res = acl["resource"]
        matches = (res["name"] == name if res.get("patternType", "literal") == "literal"
                   else name.startswith(res["name"]))
        if (acl.get("type", "allow") == "allow" and res["type"] == kind and matches
                and (operation in acl["operations"] or "All" in acl["operations"])):
            return True
    return False


def component(doc: dict[str, Any]) -> str:
    return str(doc["metadata"]["labels"]["app.kubernetes.io/component"])


def test_committed_users_are_the_generators_output() -> None:
    assert (REPO / "kafka/strimzi/users.yaml").read_text() == strimzi_users()


def test_estimate_cannot_write_completed_nor_read_what_it_does_not_consume() -> None:
    estimate = users()["quotaflow-estimate"]
    assert not allowed(estimate, "Write", "topic", "quotaflow.completed")
    assert not allowed(estimate, "Read", "topic", "quotaflow.reserved")
    assert not allowed(estimate, "Read", "group", "quotaflow-settle")
    assert allowed(estimate, "Read", "topic", "quotaflow.admitted")
    assert allowed(estimate, "Write", "topic", "quotaflow.estimated")


def test_each_step_may_do_exactly_what_its_declaration_says() -> None:
    declared = {PREFIX + t.name for t in topic_specs()}
    everyone = users()
    for name in CONSUMER_STEPS:
        step, user = load_step(name), everyone[user_name(name)]
        writes = {*step.produces, *(t + ".dlq" for t in step.consumes)}
        if name == "settle":
            writes.add("ledger")  # its ledger relay
        for topic in declared:
            bare = topic.removeprefix(PREFIX)
            assert allowed(user, "Write", "topic", topic) == (bare in writes), (name, topic)
            assert allowed(user, "Read", "topic", topic) == (bare in step.consumes), (name, topic)
        for acl in user["spec"]["authorization"]["acls"]:
            assert acl["resource"]["patternType"] == "literal"
            assert "All" not in acl["operations"]
            if acl["resource"]["type"] == "topic":
                assert acl["resource"]["name"] in declared
    admit = everyone["quotaflow-admit"]
    assert [t for t in declared if allowed(admit, "Write", "topic", t)] == ["quotaflow.admitted"]
    assert not any(allowed(admit, "Read", "topic", t) for t in declared)


def test_every_consumer_may_join_its_groups_and_only_those() -> None:
    everyone = users()
    for source in by_kind("KafkaSource"):
        user = everyone[user_name(component(source))]
        assert allowed(user, "Read", "group", source["spec"]["consumerGroup"])
        (topic,) = source["spec"]["topics"]
        assert source["spec"]["consumerGroup"] == source_group(component(source),
                                                               topic.removeprefix(PREFIX))
    for name in CONSUMER_STEPS:  # the Kafka loop's group (quotaflow run STEP)
        assert allowed(everyone[user_name(name)], "Read", "group", f"quotaflow-{name}")
        others = [n for n in CONSUMER_STEPS if n != name]
        assert not any(allowed(everyone[user_name(name)], "Read", "group", f"quotaflow-{o}")
                       for o in others)
    assert allowed(everyone["quotaflow-analytics"], "Read", "group", "quotaflow-analytics")
    assert allowed(everyone["quotaflow-alerts"], "Read", "group", "quotaflow-alerts")


def test_every_function_and_the_analytics_and_alerts_consumers_have_a_user() -> None:
    workloads = {component(s) for s in by_kind("Service")} | {"analytics", "alerts", "all"}
    assert set(users()) == {user_name(w) for w in workloads}
    assert [a.function for a in accesses()] == ["admit", *CONSUMER_STEPS, "all", "analytics",
                                                "alerts"]
    everything = accesses()[:-3]
    (all_in_one,) = [a for a in accesses() if a.function == "all"]
    for field in ("reads", "writes", "groups"):
        assert set(getattr(all_in_one, field)) == {x for a in everything
                                                   for x in getattr(a, field)}


def _secret_ref(holder: dict[str, Any]) -> tuple[str, str]:
    ref = holder["secretKeyRef"]
    return ref["name"], ref["key"]


def test_every_kafka_source_authenticates_as_its_functions_user() -> None:
    (sasl_names,) = [d["stringData"] for d in by_kind("Secret")
                     if d["metadata"]["name"] == "quotaflow-kafka-sasl"]
    for source in by_kind("KafkaSource"):
        net, fn = source["spec"]["net"], component(source)
        assert net["sasl"]["enable"] is True and net["tls"]["enable"] is True
        assert _secret_ref(net["sasl"]["password"]) == (user_name(fn), "password")
        secret, key = _secret_ref(net["sasl"]["user"])
        assert secret == "quotaflow-kafka-sasl" and sasl_names[key] == user_name(fn)
        secret, key = _secret_ref(net["sasl"]["type"])
        assert secret == "quotaflow-kafka-sasl" and sasl_names[key] == "SCRAM-SHA-512"
        assert _secret_ref(net["tls"]["caCert"]) == CA_SECRET


def test_every_function_runs_as_its_own_user_over_sasl_ssl() -> None:
    (config,) = [d["data"] for d in by_kind("ConfigMap")
                 if d["metadata"]["name"] == "quotaflow-config"]
    assert config["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["KAFKA_SASL_MECHANISMS"] == "SCRAM-SHA-512"
    workloads = [*by_kind("Service"), *by_kind("Deployment")]
    assert len(workloads) == 8
    for doc in workloads:
        (container,) = doc["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        fn = component(doc)
        assert env["KAFKA_SASL_USERNAME"]["value"] == user_name(fn)
        assert _secret_ref(env["KAFKA_SASL_PASSWORD"]["valueFrom"]) == (user_name(fn),
                                                                        "password")
        assert _secret_ref(env["KAFKA_SSL_CA_PEM"]["valueFrom"]) == CA_SECRET
    # `kn func deploy` sets a Service's environment from its func.yaml: the same user there.
    for path in func_yamls():
        doc = yaml.safe_load(path.read_text())
        env = {e["name"]: e["value"] for e in doc["run"]["envs"]}
        fn = doc["name"].removeprefix("quotaflow").removeprefix("-") or "all"
        assert env["KAFKA_SASL_USERNAME"] == user_name(fn)
        assert env["KAFKA_SASL_PASSWORD"] == f"{{{{ secret:{user_name(fn)}:password }}}}"
        assert env["KAFKA_SSL_CA_PEM"] == "{{ secret:quotaflow-cluster-ca-cert:ca.crt }}"
        assert env["KAFKA_SECURITY_PROTOCOL"] == \
            "{{ configMap:quotaflow-config:KAFKA_SECURITY_PROTOCOL }}"


def test_every_dead_letter_sink_writes_as_a_user_allowed_to() -> None:
    everyone = users()
    writers = {s["spec"]["delivery"]["deadLetterSink"]["ref"]["name"]: component(s)
               for s in by_kind("KafkaSource")}
    for sink in by_kind("KafkaSink"):
        fn = writers[sink["metadata"]["name"]]
        assert sink["spec"]["auth"]["secret"]["ref"]["name"] == f"quotaflow-{fn}-kafka-auth"
        assert allowed(everyone[user_name(fn)], "Write", "topic", sink["spec"]["topic"])


def test_topics_are_replicated_three_times_with_min_isr_two() -> None:
    for topic in by_kind("KafkaTopic"):
        assert topic["spec"]["replicas"] == 3
        assert topic["spec"]["config"]["min.insync.replicas"] == 2


def test_the_kafka_user_crd_rejects_an_unknown_operation() -> None:
    doc = yaml.safe_load(strimzi_users().split("---")[1])
    doc["spec"]["authorization"]["acls"][0]["operations"] = ["Writ"]
    with pytest.raises(jsonschema.ValidationError, match="Writ"):
        crd_validator(doc["apiVersion"], doc["kind"]).validate(doc)
