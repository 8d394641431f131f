"""Which model a process serves, from Settings.model_source:

    standin     the deterministic stand-in (no weights)
    dir:PATH    a directory built by `quotaflow model build`
    registry    QF_MODEL_NAME from the S3 registry: the canary version for its weight of
                requests, stable for the rest, re-resolved every few seconds, so a promotion
                takes effect without a restart
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from quotaflow.model.base import (
    ChatMessage,
    GenerationRequest,
    GenerationResult,
    Generator,
    Tokenizer,
    TokenSink,
)
from quotaflow.model.onnx_decoder import OnnxGenerator
from quotaflow.model.registry import Aliases, ModelRegistry
from quotaflow.model.standin import StandInModel
from quotaflow.model.tokenizer import ChatTokenizer
from quotaflow.settings import Settings

log = logging.getLogger(__name__)


def _registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry.connect(settings.s3_endpoint_url, settings.model_bucket)


def load_tokenizer(settings: Settings) -> Tokenizer:
    src = settings.model_source
    if src == "standin":
        return StandInModel()
    if src.startswith("dir:"):
        return ChatTokenizer(Path(src[4:]))
    reg = _registry(settings)
    version = reg.aliases(settings.model_name).pick("")
    return ChatTokenizer(reg.fetch(settings.model_name, version, Path(settings.model_cache_dir)))


def load_generator(settings: Settings) -> Generator:
    """Load the model and warm it up before the process takes traffic."""
    src = settings.model_source
    if src == "standin":
        return StandInModel(settings.standin_token_delay_ms / 1000)
    if src.startswith("dir:"):
        gen = OnnxGenerator(Path(src[4:]), spin=bool(settings.ort_spin))
        gen.warm_up()
        return gen
    return RegistryRouter(_registry(settings), settings.model_name,
                          Path(settings.model_cache_dir), spin=bool(settings.ort_spin))


class RegistryRouter:
    """A Generator that routes each request to the version its alias names for it."""

    def __init__(self, registry: ModelRegistry, name: str, cache_dir: Path,
                 refresh_s: float = 5.0, spin: bool = True) -> None:
        self.registry = registry
        self.spin = spin
        self._name = name
        self.cache_dir = cache_dir
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._loaded: dict[str, OnnxGenerator] = {}
        self._aliases = registry.aliases(name)
        self._checked = time.monotonic()
        self._stable().warm_up()

    def aliases(self) -> Aliases:
        now = time.monotonic()
        if now - self._checked >= self.refresh_s:
            self._checked = now
            fresh = self.registry.aliases(self._name)
            if fresh != self._aliases:
                log.info("model aliases changed: %s -> %s", self._aliases, fresh)
                self._aliases = fresh
        return self._aliases

    def generator(self, version: str) -> OnnxGenerator:
        with self._lock:
            if version not in self._loaded:
                path = self.registry.fetch(self._name, version, self.cache_dir)
                self._loaded[version] = OnnxGenerator(path, spin=self.spin)
                keep = {v for v in (self._aliases.stable, self._aliases.canary) if v}
                for old in [v for v in self._loaded if v not in keep and v != version]:
                    del self._loaded[old]
            return self._loaded[version]

    def _stable(self) -> OnnxGenerator:
        return self.generator(self.aliases().pick(""))

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return self._stable().version

    @property
    def device(self) -> str:
        return self._stable().device

    @property
    def context_tokens(self) -> int:
        return self._stable().context_tokens

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return self._stable().count_prompt_tokens(messages)

    def generate(self, batch: Sequence[GenerationRequest], sink: TokenSink | None = None
                 ) -> list[GenerationResult]:
        """Each version's group in turn, each streaming through `sink`."""
        aliases = self.aliases()
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(batch):
            groups.setdefault(aliases.pick(r.request_id), []).append(i)
        results: list[GenerationResult | None] = [None] * len(batch)
        for version, idx in groups.items():
            group = self.generator(version).generate([batch[i] for i in idx], sink)
            for i, res in zip(idx, group, strict=True):
                results[i] = res
        return [r for r in results if r is not None]
