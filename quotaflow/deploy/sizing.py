"""How each function is sized and what it needs: the one table `quotaflow func generate`
renders every `func.yaml` and `pyproject.toml` from. Keep `knative/services/<step>.yaml` in
step with it (tests/deploy checks scale and concurrency).

"all" is the root func.yaml: admit's HTTP door plus the five Kafka loops in one process."""

from __future__ import annotations

from dataclasses import dataclass

from quotaflow.settings import ENV_NAMES

CONFIG_MAP = "quotaflow-config"
SECRET = "quotaflow-secrets"
# Settings fields every function reads from the ConfigMap, then from the Secret, in this order.
FROM_CONFIG_MAP = ("kafka_bootstrap", "topic_prefix", "model_source", "model_name",
                   "model_bucket", "model_cache_dir", "public_url",
                   "reservation_ttl_s", "redrive_after_s", "request_deadline_s", "batch_max",
                   "batch_wait_ms", "log_level", "metrics_port", "metrics_addr")
FROM_SECRET = ("postgres_url", "redis_url", "s3_endpoint_url")
# Read by boto3 itself, not by Settings; secrets too.
LIBRARY_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")

RUNTIME_DEPENDENCIES = ("cloudevents>=2.2,<3", "flask>=3.0",
                        "confluent-kafka>=2.16", "fastavro>=1.9", "psycopg[binary]>=3.2",
                        "redis>=5.0", "prometheus-client>=0.20", "pyyaml>=6.0")
# The model comes from a directory or the S3 registry (QF_MODEL_SOURCE=registry): boto3 for both
# steps that load it.
TOKENIZER_DEPENDENCIES = ("numpy>=1.26", "transformers>=4.57", "tokenizers>=0.22", "boto3>=1.34")
GENERATOR_DEPENDENCIES = (*TOKENIZER_DEPENDENCIES, "onnxruntime>=1.20")
# The GPU build of infer: onnxruntime-gpu with the CUDA and cuDNN libraries from NVIDIA's wheels
# (loaded by `onnxruntime.preload_dlls()`, quotaflow/model/session.py). Never beside onnxruntime:
# both install the `onnxruntime` module.
GPU_GENERATOR_DEPENDENCIES = (*TOKENIZER_DEPENDENCIES, "onnxruntime-gpu[cuda,cudnn]>=1.20")


@dataclass(frozen=True)
class Sizing:
    """One function's Knative scale and resources, and what its build context installs."""

    scale_min: int
    scale_max: int
    target: int  # in-flight requests per instance the autoscaler aims for
    concurrency: int  # hard limit per instance (containerConcurrency)
    cpu: tuple[str, str]  # request, limit
    memory: tuple[str, str]  # request, limit
    metric: str = "concurrency"
    window: str = "60s"
    extra_dependencies: tuple[str, ...] = ()  # beyond RUNTIME_DEPENDENCIES


_SMALL = Sizing(0, 10, 20, 50, ("250m", "1"), ("256Mi", "512Mi"))

SIZING: dict[str, Sizing] = {
    "all": Sizing(1, 1, 50, 100, ("2", "4"), ("3Gi", "6Gi")),
    "admit": Sizing(0, 20, 50, 100, ("250m", "1"), ("512Mi", "1Gi")),
    "estimate": Sizing(0, 10, 20, 50, ("250m", "1"), ("512Mi", "1Gi"),
                       extra_dependencies=TOKENIZER_DEPENDENCIES),
    "reserve": _SMALL,
    "infer": Sizing(0, 8, 8, 8, ("2", "4"), ("2Gi", "4Gi"),
                    extra_dependencies=GENERATOR_DEPENDENCIES),
    "settle": _SMALL,
    "record": _SMALL,
}


@dataclass(frozen=True)
class Variant:
    """Another build of a step: its own build context functions/<variant>/ (same handler, same
    Knative Service), other dependencies and sizing."""

    step: str
    sizing: Sizing
    what: str  # one line for the generated files' headers


# infer on a GPU: deployed with the kustomize component knative/overlays/gpu (which asks for
# nvidia.com/gpu, a GPU node and its taint's toleration; func.yaml cannot), scale and resources
# as that overlay sets them (tests/deploy checks they agree).
VARIANTS: dict[str, Variant] = {
    "infer-gpu": Variant("infer", Sizing(0, 4, 8, 8, ("1", "4"), ("4Gi", "8Gi"),
                                         extra_dependencies=GPU_GENERATOR_DEPENDENCIES),
                         "built with onnxruntime-gpu for a GPU"),
}


# The Kafka client properties (KAFKA_<PROPERTY>) every function reads from the ConfigMap.
KAFKA_FROM_CONFIG_MAP = ("KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISMS")
# Strimzi's Secret holding the cluster CA (`<cluster>-cluster-ca-cert`), copied into the
# functions' namespace (knative/README.md).
CLUSTER_CA = ("quotaflow-cluster-ca-cert", "ca.crt")


def env_refs() -> list[tuple[str, str, str]]:
    """(variable, "configMap" or "secret", object name) for every variable a func.yaml sets
    from the shared ConfigMap and Secret, under the same key."""
    return ([(ENV_NAMES[f], "configMap", CONFIG_MAP) for f in FROM_CONFIG_MAP]
            + [(name, "configMap", CONFIG_MAP) for name in KAFKA_FROM_CONFIG_MAP]
            + [(ENV_NAMES[f], "secret", SECRET) for f in FROM_SECRET]
            + [(name, "secret", SECRET) for name in LIBRARY_SECRETS])


def kafka_user_env(user: str) -> list[tuple[str, str]]:
    """(variable, func.yaml value) that make a function authenticate as its Kafka user: the
    name, the password from the Secret Strimzi's User Operator writes for the user, and the
    cluster CA (kafka/strimzi/users.yaml)."""
    return [("KAFKA_SASL_USERNAME", user),
            ("KAFKA_SASL_PASSWORD", f"{{{{ secret:{user}:password }}}}"),
            ("KAFKA_SSL_CA_PEM", f"{{{{ secret:{CLUSTER_CA[0]}:{CLUSTER_CA[1]} }}}}")]
