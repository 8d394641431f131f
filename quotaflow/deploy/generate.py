"""`quotaflow func generate`: render every per-step deployment file from the sizing table and
the templates, write them, or report the committed ones that differ (`--check`)."""

from __future__ import annotations

from pathlib import Path

import yaml

from quotaflow.deploy import templates as t
from quotaflow.deploy.kafka_users import user_name
from quotaflow.deploy.sizing import (
    RUNTIME_DEPENDENCIES,
    SIZING,
    VARIANTS,
    Sizing,
    env_refs,
    kafka_user_env,
)
from quotaflow.runtime.steps import ALL_STEPS, CONSUMER_STEPS

ALL_IN_ONE = "all"


def _scalar(value: str) -> str:
    """A YAML scalar as PyYAML writes it: quoted only where a plain one would not be a string."""
    return yaml.safe_dump([value]).removeprefix("- ").rstrip("\n")


def func_yaml(step: str, sizing: Sizing, variant: str | None = None) -> str:
    """A func.yaml: the root all-in-one one for "all", functions/<step>/func.yaml otherwise,
    functions/<variant>/func.yaml for a variant of the step (VARIANTS)."""
    values = [(name, f"{{{{ {kind}:{source}:{name} }}}}") for name, kind, source in env_refs()]
    values += kafka_user_env(user_name("all" if step == ALL_IN_ONE else step))
    envs = "\n".join(t.ENV.substitute(name=name, value=_scalar(value))
                     for name, value in values)
    root = step == ALL_IN_ONE
    return t.FUNC_YAML.substitute(
        generated=t.GENERATED,
        header=(t.ROOT_FUNC_HEADER if root else
                t.VARIANT_FUNC_HEADER.substitute(step=step, context=variant,
                                                 what=VARIANTS[variant].what) if variant else
                t.STEP_FUNC_HEADER.substitute(step=step)),
        name="quotaflow" if root else f"quotaflow-{step}",
        invoke_note=t.INVOKE_NOTE if step in CONSUMER_STEPS else "",
        envs=envs, window=sizing.window, metric=sizing.metric,
        scale_min=sizing.scale_min, scale_max=sizing.scale_max, target=sizing.target,
        cpu_request=_scalar(sizing.cpu[0]), cpu_limit=_scalar(sizing.cpu[1]),
        memory_request=_scalar(sizing.memory[0]), memory_limit=_scalar(sizing.memory[1]),
        concurrency=sizing.concurrency)


def pyproject(step: str, sizing: Sizing) -> str:
    """functions/<step>/pyproject.toml (or a variant's): the build context's project, named
    `function`."""
    deps = "\n".join(f'  "{d}",' for d in (*RUNTIME_DEPENDENCIES, *sizing.extra_dependencies))
    return t.PYPROJECT.substitute(generated=t.GENERATED, step=step, dependencies=deps)


def app(step: str) -> str:
    """functions/<step>/app.py: the step's WSGI factory."""
    role = ("HTTP CloudEvents entry (what Knative's KafkaSource calls)" if step in CONSUMER_STEPS
            else "HTTP entry (the public door clients POST CloudEvents to)")
    return t.APP.substitute(generated=t.GENERATED, step=step, role=role)


def knative_entry(step: str) -> str:
    """function/__init__.py: `new()` for the func-python middleware."""
    what = (f"the {step} function" if step != ALL_IN_ONE else
            "the root func.yaml: the all-in-one function for small installs (admit's\n"
            "HTTP door plus the five pipeline steps as Kafka loops in one process)")
    return t.KNATIVE_ENTRY.substitute(generated=t.GENERATED, step=step, what=what)


def render() -> dict[str, str]:
    """Every generated file's content, by its path relative to the repository root."""
    expected = {ALL_IN_ONE, *ALL_STEPS}
    if set(SIZING) != expected:
        raise ValueError(f"the sizing table must have exactly {sorted(expected)}, "
                         f"has {sorted(SIZING)}")
    files = {"func.yaml": func_yaml(ALL_IN_ONE, SIZING[ALL_IN_ONE]),
             "function/__init__.py": knative_entry(ALL_IN_ONE)}
    for step in ALL_STEPS:
        base = f"functions/{step}"
        files[f"{base}/func.yaml"] = func_yaml(step, SIZING[step])
        files[f"{base}/pyproject.toml"] = pyproject(step, SIZING[step])
        files[f"{base}/app.py"] = app(step)
        files[f"{base}/function/__init__.py"] = knative_entry(step)
    for name, variant in VARIANTS.items():
        base = f"functions/{name}"
        files[f"{base}/func.yaml"] = func_yaml(variant.step, variant.sizing, name)
        files[f"{base}/pyproject.toml"] = pyproject(name, variant.sizing)
        files[f"{base}/app.py"] = app(variant.step)
        files[f"{base}/function/__init__.py"] = knative_entry(variant.step)
    return files


def stale(root: Path) -> list[str]:
    """Generated files under root that are missing or differ from the generator's output."""
    return [rel for rel, text in render().items()
            if not (root / rel).is_file() or (root / rel).read_text() != text]


def write(root: Path) -> list[str]:
    """Write the generated files under root; the ones that changed."""
    changed = stale(root)
    files = render()
    for rel in changed:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(files[rel])
    return changed
