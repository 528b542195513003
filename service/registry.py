"""The model repository: `<root>/<name>/<version>/model.onnx`, validated, warmed, swappable.

A model is served only once its file passed the contract reader and a warm-up run. Reloading
a name builds every version anew first and swaps the whole table at once: requests already
holding the old model finish on it, and a file that fails validation leaves the old one serving.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.contract import (
    NAME_PATTERN,
    VERSION_PATTERN,
    ContractError,
    ModelContract,
    contract_of,
)
from service.errors import BadRequest, NotFound, quoted
from service.inference import forward, row_counts, rows_for, tile
from service.runtime import ProviderError, create_session, provider_name

log = logging.getLogger("mimo.registry")


@dataclass(eq=False)
class ServedModel:
    name: str
    version: int
    path: Path
    session: ort.InferenceSession
    contract: ModelContract
    provider: str
    # More threads for a batch of one (ModelRegistry's lone_threads): latency at low load,
    # while batches keep one session's threads per worker and do not oversubscribe the cores.
    lone_session: ort.InferenceSession | None = None
    # Sessions by the one batch size each runs at (inference.row_counts), batches padded up
    # (Settings.fixed_batch_sizes: on GPUs): ONNX Runtime's CUDA provider plans its
    # convolutions again whenever a session's input shape changes, so the shapes stay few
    # (docs/benchmarks.md, "On a GPU"). Empty: `session` runs every size.
    fixed: dict[int, ort.InferenceSession] = field(default_factory=dict)

    def rows_for(self, n: int) -> int:
        """The rows a pass of `n` rows runs at."""
        return rows_for(n, self.fixed)  # (its sizes, ascending: row_counts' order)

    def session_for(self, rows: int, lone: bool = False) -> ort.InferenceSession:
        """The session of that batch size where sizes are fixed; else the lone session for a
        lone image, where there is one, or the batch session."""
        if self.fixed:
            return self.fixed.get(rows, self.session)
        return self.lone_session if lone and self.lone_session is not None else self.session

    @property
    def series(self) -> tuple[str, str]:
        """The label values of its Prometheus series: (model, version); the class names are
        `contract.labels`."""
        return self.name, str(self.version)


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def load_model(
    path: Path,
    name: str,
    version: int,
    providers: str,
    threads: int,
    warmup_batch: int,
    lone_threads: int = 0,
    fixed_sizes: bool | None = None,
) -> ServedModel:
    """A model version loaded, checked against the contract and warmed up; `fixed_sizes`
    (None: on accelerators only) gives it a session per batch size (ServedModel.fixed)."""
    # Messages that reach clients name the file inside the repository, never the server's
    # own file system (`shown`); the log gets the full path.
    shown = f"{name}/{version}/model.onnx"
    try:
        session = create_session(str(path), providers, threads)
    except ProviderError as exc:
        raise ProviderError(str(exc).replace(str(path), shown)) from None
    except Exception as exc:
        raise ContractError(
            f"{shown}: not a model ONNX Runtime can load "
            f"({str(exc).replace(str(path), shown)[:300]})"
        ) from None
    contract = contract_of(session, shown)
    model = ServedModel(name, version, path, session, contract, provider_name(session))
    zeros = np.zeros((1, *contract.input_shape), np.float32)
    if model.provider != "cpu" if fixed_sizes is None else fixed_sizes:
        for rows in row_counts(warmup_batch):
            # (on the provider the first session got: `auto` must not put one size elsewhere)
            fixed = (
                session
                if rows == warmup_batch
                else create_session(str(path), model.provider, threads)
            )
            model.fixed[rows] = fixed
            forward(fixed, tile(zeros, contract.ensemble_size, rows))  # warm-up
        return model
    if lone_threads and model.provider == "cpu":  # (Layout.lone_threads)
        model.lone_session = create_session(str(path), providers, lone_threads)
    for batch in {1, warmup_batch}:
        # warm-up: the first runs allocate and tune
        forward(session, tile(zeros, contract.ensemble_size, batch))
    if model.lone_session is not None:
        forward(model.lone_session, tile(zeros, contract.ensemble_size))
    return model


class ModelRegistry:
    def __init__(
        self,
        root: Path,
        providers: str,
        threads: int,
        warmup_batch: int,
        lone_threads: int = 0,
        fixed_sizes: bool | None = None,
    ) -> None:
        self.root = Path(root)
        self.fixed_sizes = fixed_sizes
        self.providers = providers
        self.threads = threads
        self.lone_threads = lone_threads
        self.warmup_batch = warmup_batch
        self._models: dict[str, dict[int, ServedModel]] = {}
        self.failures: dict[str, str] = {}  # "name/version" -> why it is not served
        self._lock = threading.Lock()  # serialises reloads; reads take the table as it is

    def _versions_on_disk(self, name: str) -> dict[int, Path]:
        folder = self.root / name
        try:
            if not folder.is_dir():
                return {}
            return {
                int(v.name): v / "model.onnx"
                for v in folder.iterdir()
                if v.is_dir() and VERSION_PATTERN.fullmatch(v.name) and (v / "model.onnx").is_file()
            }
        except OSError:  # a name the file system refuses (too long, ...) holds no model
            return {}

    def names_on_disk(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and NAME_PATTERN.fullmatch(p.name)
        )

    def _build(self, name: str) -> tuple[dict[int, ServedModel], dict[str, str]]:
        built: dict[int, ServedModel] = {}
        failed: dict[str, str] = {}
        for version, path in sorted(self._versions_on_disk(name).items()):
            try:
                built[version] = load_model(
                    path,
                    name,
                    version,
                    self.providers,
                    self.threads,
                    self.warmup_batch,
                    self.lone_threads,
                    self.fixed_sizes,
                )
            except (ContractError, ProviderError) as exc:
                failed[f"{name}/{version}"] = str(exc)
            except Exception as exc:
                failed[f"{name}/{version}"] = (
                    f"{name}/{version}/model.onnx: could not load ({type(exc).__name__})"
                )
                log.exception("loading %s", path)
        for key, why in failed.items():
            log.error("not serving %s (%s): %s", key, self.root / key, why)
        return built, failed

    def load_all(self) -> LoadReport:
        report = LoadReport()
        for name in self.names_on_disk():
            report_one = self.load(name, replace_failed=True)
            report.loaded += report_one.loaded
            report.failed |= report_one.failed
        return report

    def load(self, name: str, replace_failed: bool = False) -> LoadReport:
        """(Re)load every version of a name; the swap happens only if nothing failed.

        With `replace_failed` (start-up), the versions that did load are served anyway.
        """
        if not NAME_PATTERN.fullmatch(name):
            raise BadRequest(f"model name {quoted(name)} must match {NAME_PATTERN.pattern}")
        with self._lock:
            if not self._versions_on_disk(name):
                raise NotFound(
                    f"no model {name!r} in the repository "
                    f"(expected <repository>/{name}/<version>/model.onnx)"
                )
            built, failed = self._build(name)
            if failed and not replace_failed:
                return LoadReport(failed=failed)
            table = dict(self._models)
            table[name] = built
            self._models = table  # one assignment: readers see the old or the new table
            self.failures = {k: v for k, v in self.failures.items() if not k.startswith(f"{name}/")}
            self.failures |= failed
            return LoadReport(loaded=[f"{name}/{v}" for v in built], failed=failed)

    def unload(self, name: str) -> None:
        with self._lock:
            if name not in self._models:
                raise NotFound(f"model {quoted(name)} is not loaded")
            table = dict(self._models)
            del table[name]
            self._models = table
            # (an unloaded name's 404 must not say it was refused at load)
            self.failures = {k: v for k, v in self.failures.items() if not k.startswith(f"{name}/")}

    def get(self, name: str, version: int | None = None) -> ServedModel:
        versions = self._models.get(name)
        if not versions:
            known = ", ".join(sorted(n for n, v in self._models.items() if v)) or "none"
            refused = [
                f"{key} was refused at load: {why}"
                for key, why in sorted(self.failures.items())
                if key.startswith(f"{name}/")
            ]
            if refused:
                raise NotFound(f"model {quoted(name)} is not served: {'; '.join(refused)}")
            raise NotFound(f"unknown model {quoted(name)}; served models: {known}")
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise NotFound(
                f"model {name!r} has no version {quoted(version)}; versions: {sorted(versions)}"
            )
        return versions[version]

    def models(self) -> list[ServedModel]:
        return [m for versions in self._models.values() for m in versions.values()]
