"""The run parameters (``params/*.yml``), validated by one pydantic model before anything runs.

A parameters file has these sections::

    executed_dir: book/executed        # where executed notebooks go
    jobs: 2                            # chapters run at once (default 1)
    dataset: {generate: true, ...}     # the demo data set (helpers.datagen.simulate.DEFAULTS), or generate: false
    common: {data_dir: ..., results_dir: ...}   # passed to every notebook that declares the name
    notebooks: {03_volume_metrics: {voxel_size: 2.146, ...}, ...}   # per notebook

:class:`RunParams` types the file; each notebook's section is checked against a model built from
the notebook's own ``parameters`` cell (:func:`notebook_model`: a parameter's type is its
default's, sizes are positive, a few have a floor, e.g. ``n_replicates ≥ 3``). Every problem of
the whole file is listed at once, each as ``<notebook>: <name> = <value> should be …``, and the run
stops before a kernel starts (:func:`validate`), in the same style as the submission config's
schema (:mod:`helpers.io.schema`).
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from helpers.core.paths import resolve

POSITIVE = {"voxel_size", "n_images", "box_ds", "n_directions", "n_inplane", "rank", "n_pool", "n_replicates",
            "sw_directions", "align_box", "align_directions", "align_inplane", "n_bootstrap", "transport_top_k",
            "transport_box", "box", "n_gt", "n_maps", "n_small"}
NONNEGATIVE = {"memory_gib", "transport_jobs", "dask_workers", "n_heldout", "snr"}  # 0 means "the default" / none
# (section, parameter): (smallest value, why)
AT_LEAST = {("07_robustness", "n_replicates"): (3, "each level is tested against the base by a paired t-test "
                                                   "over replicates: with 1 the spread is 0, with 2 it has 1 degree of freedom")}
WANT = {"bool_type": "true or false", "int_type": "a whole number", "int_from_float": "a whole number",
        "float_type": "a number", "string_type": "a text (quote it)", "list_type": "a list, e.g. [a, b]",
        "dict_type": "a mapping, e.g. {a: 1}"}


def declared_parameters(nb) -> dict:
    """Names and default values assigned in a notebook's ``parameters`` cell (None where the
    default is not a literal)."""
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            out = {}
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign):
                    for t in node.targets:
                        if isinstance(t, ast.Name):
                            try:
                                out[t.id] = ast.literal_eval(node.value)
                            except ValueError:
                                out[t.id] = None
            return out
    raise ValueError("no cell tagged 'parameters'")


def _field(section: str, name: str, default) -> tuple:
    """(type, Field) of one parameter: the default's type, with its range."""
    if default is None:
        return Any, Field(None)
    typ = {bool: bool, int: int, float: float, str: str, list: list, tuple: list, dict: dict}.get(type(default), Any)
    limits = {}
    if typ in (int, float):
        least = AT_LEAST.get((section, name))
        if least is not None:
            limits["ge"] = least[0]
        elif name in POSITIVE:
            limits["gt"] = 0
        elif name in NONNEGATIVE:
            limits["ge"] = 0
    return typ, Field(default, **limits)


def notebook_model(stem: str, declared: dict) -> type[BaseModel]:
    """A strict model of one notebook's parameters (unknown names refused, no type coercion
    except whole numbers where a number is expected)."""
    return create_model(f"Params_{stem}", __config__=ConfigDict(extra="forbid", strict=True),
                        **{k: _field(stem, k, v) for k, v in declared.items()})


def dataset_model() -> type[BaseModel]:
    """The ``dataset`` section: :data:`helpers.datagen.simulate.DEFAULTS` plus where it goes."""
    from helpers.datagen.simulate import DEFAULTS

    fields = {k: _field("dataset", k, v) for k, v in DEFAULTS.items()}
    fields.update(generate=(bool, Field(False)), out_dir=(str, Field("data/demo")),
                  adk_npz=(str, Field("data/adk/adk_paths.npz")), cryodrgn=(dict | None, Field(None)),
                  recovar=(dict | None, Field(None)))
    return create_model("DatasetParams", __config__=ConfigDict(extra="forbid", strict=True), **fields)


class RunParams(BaseModel):
    """A whole parameters file (the sections are checked further by :func:`validate`)."""
    model_config = ConfigDict(extra="forbid")
    executed_dir: str = "book/executed"
    jobs: int = Field(1, ge=1)  # chapters run at once (helpers.pipeline.schedule)
    dataset: dict[str, Any] = {}
    common: dict[str, Any] = {}
    notebooks: dict[str, Any] = {}


def load_params(path) -> dict:
    """Read a parameters file; missing sections get their defaults (a plain dict, as the
    runner and the notebooks' parameters take it)."""
    with open(resolve(path)) as fh:
        raw = yaml.safe_load(fh) or {}
    try:
        return RunParams(**raw).model_dump()
    except (ValidationError, TypeError) as exc:
        raise SystemExit(f"{path}: {'; '.join(_lines(exc, '', {})) if isinstance(exc, ValidationError) else exc}\n"
                         "Fix: the file has the sections executed_dir, jobs, dataset, common and notebooks only.") from None


def apply_override(cfg: dict, item: str) -> None:
    """Set ``a.b.c=value`` (value parsed as YAML) in the nested parameters dict."""
    if "=" not in item:
        raise SystemExit(f"--set needs KEY=VALUE, got {item!r}")
    key, value = item.split("=", 1)
    *path, last = key.split(".")
    node = cfg
    for k in path:
        node = node.setdefault(k, {})
    node[last] = yaml.safe_load(value)


def _lines(exc: ValidationError, section: str, declared: dict) -> list[str]:
    """One sentence per pydantic error, in the runner's words."""
    out = []
    for e in exc.errors():
        name = ".".join(str(x) for x in e["loc"]) or "(file)"
        value, kind = e.get("input"), e["type"]
        where = f"{section}: " if section else ""
        if kind == "extra_forbidden":
            out.append(f"{name} is not a section" if not section else f"{section}.{name} is not a parameter of "
                       f"{section}" + (f" (it declares {', '.join(sorted(declared))})" if declared else ""))
        elif kind in WANT:
            out.append(f"{where}{name} = {value!r} should be {WANT[kind]} (its default is {declared.get(name)!r})")
        elif kind == "greater_than":
            out.append(f"{where}{name} = {value!r} must be positive")
        elif kind == "greater_than_equal":
            least = AT_LEAST.get((section, name))
            out.append(f"{where}{name} = {value!r} must be ≥ {least[0]} ({least[1]})" if least
                       else f"{where}{name} = {value!r} must be ≥ 0 (0: the default)")
        else:
            out.append(f"{where}{name}: {e['msg']}")
    return out


def check_section(section: str, model: type[BaseModel], values, declared: dict) -> list[str]:
    """Problems of one section (empty list when it validates)."""
    if not isinstance(values, dict):
        return [f"{section} should be a mapping of parameters, got {values!r}"]
    try:
        model(**values)
        return []
    except ValidationError as exc:
        return _lines(exc, section, declared)


def validate(cfg: dict, notebooks: list[Path], source: str) -> None:
    """Check every parameter the runner would pass (each notebook's own section and the
    ``common`` values it declares) and the ``dataset`` section: all problems listed at once
    (exits with a message, never a traceback from inside a notebook)."""
    import jupytext

    problems = []
    if cfg.get("dataset", {}).get("generate"):
        from helpers.datagen.simulate import DEFAULTS

        problems += check_section("dataset", dataset_model(), cfg["dataset"], DEFAULTS)
        from helpers.pipeline.demo_data import method_problems

        problems += [p for key in ("cryodrgn", "recovar") for p in method_problems(cfg["dataset"].get(key), key)]
    for path in notebooks:
        declared = declared_parameters(jupytext.read(path))
        own = cfg["notebooks"].get(path.stem, {}) or {}
        if not isinstance(own, dict):
            problems.append(f"notebooks.{path.stem} should be a mapping of parameters, got {own!r}")
            continue
        values = {**{k: v for k, v in cfg["common"].items() if k in declared}, **own}
        for p in check_section(path.stem, notebook_model(path.stem, declared), values, declared):
            problems.append(("notebooks." + p) if " is not a parameter of " in p else p)
    if problems:
        raise SystemExit(f"{source}: {len(problems)} problem(s) with the parameters:\n  - " + "\n  - ".join(problems)
                         + "\nFix: correct them in the parameters file or the --set options.")


def parameters_for(nb, stem: str, cfg: dict) -> dict:
    """The parameters passed to one notebook: the ``common`` ones it declares + its own section."""
    declared = declared_parameters(nb)
    params = {k: v for k, v in cfg["common"].items() if k in declared}
    own = cfg["notebooks"].get(stem, {}) or {}
    unknown = set(own) - set(declared)
    if unknown:
        raise SystemExit(f"{stem}: parameters {sorted(unknown)} are not declared in its parameters cell")
    params.update(own)
    return params
