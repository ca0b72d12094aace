"""Field documentation from the docstrings under each field of the spec models.

pydantic can read these itself (`use_attribute_docstrings`), but it re-reads the source of
every class at import time, which costs `runner validate` about 15 ms on every run. The
docs are needed only for the schema and for some hints, so they are read here, on demand.
"""

from __future__ import annotations

import ast
import functools
import inspect
import sys
import types


@functools.cache
def field_docs() -> dict[str, dict[str, str]]:
    """{model class name: {field name: docstring}} for the spec models, the shared field types, the declared
    rewards and each method's section (in its descriptor module): what the schema documents."""
    from runner.methods import registry
    from runner.rewards import spec as rewards
    from runner.spec import evals, fields, models

    docs: dict[str, dict[str, str]] = {}
    for module in (fields, models, evals, rewards, *registry.descriptor_modules()):
        docs.update(_module_docs(module.__name__))
    # The method's sections are added to JobSpec by create_model, from the descriptors: no source of their own.
    made = {name: info.description for name, info in models.schema_model().model_fields.items() if info.description}
    docs[models.JobSpec.__name__] = {**docs[models.JobSpec.__name__], **made}
    return docs


def docs_of(model: type) -> dict[str, str]:
    """{field name: docstring} of one model, read from its own module alone: the hint for a missing key reads
    that, not every method's descriptor."""
    return _module_docs(model.__module__).get(model.__name__, {})


@functools.cache
def _module_docs(module_name: str) -> dict[str, dict[str, str]]:
    module = sys.modules[module_name]
    docs: dict[str, dict[str, str]] = {}
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, ast.ClassDef):  # a field declared in a base class keeps its doc
            inherited = [_base_docs(module, docs, base.id) for base in node.bases if isinstance(base, ast.Name)]
            docs[node.name] = {key: doc for found in [*inherited, _class_docs(node)] for key, doc in found.items()}
    return docs


def _base_docs(module: types.ModuleType, read: dict[str, dict[str, str]], name: str) -> dict[str, str]:
    """A base class's docs: one of this module's (read above it), or one imported from another of runner's
    modules (not pydantic's BaseModel, whose source documents its internals the same way)."""
    if name in read:
        return read[name]
    base = getattr(module, name, None)
    theirs = isinstance(base, type) and base.__module__ != module.__name__ and base.__module__.startswith("runner.")
    return docs_of(base) if theirs else {}


def _class_docs(node: ast.ClassDef) -> dict[str, str]:
    found = {}
    for statement, following in zip(node.body, node.body[1:]):
        if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            found[statement.target.id] = inspect.cleandoc(following.value.value)
    return found


def describe_schema(schema: dict, root: str) -> dict:
    """Add the field docs to a JSON Schema made by `model_json_schema`, in place."""
    docs = field_docs()
    for name, definition in [(root, schema), *schema.get("$defs", {}).items()]:
        target = definition
        if "anyOf" in definition:  # models with a string shorthand
            target = next((part for part in definition["anyOf"] if "properties" in part), definition)
        for field_name, prop in target.get("properties", {}).items():
            if field_name in docs.get(name, {}):
                prop["description"] = docs[name][field_name]
    return schema
