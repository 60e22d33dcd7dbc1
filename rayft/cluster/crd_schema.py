"""Validate Kubernetes manifests against a CustomResourceDefinition's openAPIV3Schema, the way
the API server would, with the `jsonschema` library.

The CRD schema is a structural OpenAPI v3 schema. Three Kubernetes rules are applied on top of
plain JSON Schema so that the result matches what `kubectl apply` does:

- **unknown fields are errors**: the API server prunes (silently drops) fields the schema does not
  list, so a misspelled `replicaz:` would vanish without a word. Here every object schema that lists
  `properties` and neither sets `additionalProperties` nor `x-kubernetes-preserve-unknown-fields`
  gets `additionalProperties: false`, and a pruned field is reported as an unknown one;
- `x-kubernetes-int-or-string: true` means an integer or a string (added as `anyOf` when absent);
- `nullable: true` also admits null.

`metadata` is `type: object` in every CRD (the API server checks ObjectMeta itself); here it is
checked for a name that KubeRay accepts, and string labels / annotations. CEL rules
(`x-kubernetes-validations`) are not evaluated: the operator's admission does that.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import yaml

from rayft.core.errors import UserError

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader reads a 25k-line CRD in ~1 s

_METADATA = {
    "type": "object",
    "properties": {
        # KubeRay names Services after the object, so a DNS-1035 label (<= 63 chars).
        "name": {"type": "string", "maxLength": 63, "pattern": r"^[a-z]([-a-z0-9]*[a-z0-9])?$"},
        "generateName": {"type": "string"},
        "namespace": {"type": "string", "maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "anyOf": [{"required": ["name"]}, {"required": ["generateName"]}],
}


class ManifestError(UserError):
    """A manifest or CRD file is unreadable, or a manifest does not match its CRD."""


@dataclass
class CrdSchemas:
    """The schemas of one or more CRDs, by (apiVersion, kind), e.g. ("ray.io/v1", "RayJob")."""

    schemas: dict[tuple[str, str], dict] = field(default_factory=dict)
    sources: dict[tuple[str, str], str] = field(default_factory=dict)
    _validators: dict[tuple[str, str], jsonschema.protocols.Validator] = field(default_factory=dict)

    def add_file(self, path: str | Path) -> None:
        for crd in _crd_documents(Path(path)):
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"].get("versions") or []:
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                if schema is not None:
                    key = (f"{group}/{version['name']}", kind)
                    self.schemas[key] = schema
                    self.sources[key] = str(path)

    def validator(self, api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
        key = (api_version, kind)
        if key not in self.schemas:
            return None
        if key not in self._validators:
            schema = strict_schema(self.schemas[key])
            schema.setdefault("properties", {})["metadata"] = _METADATA
            schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
            self._validators[key] = jsonschema.Draft7Validator(schema)
        return self._validators[key]


def load_crds(paths: list[str | Path]) -> CrdSchemas:
    crds = CrdSchemas()
    for path in paths:
        crds.add_file(path)
    return crds


def strict_schema(schema: dict) -> dict:
    """A copy of a structural schema with the Kubernetes rules above made explicit for jsonschema."""
    schema = copy.deepcopy(schema)
    _tighten(schema)
    return schema


def _tighten(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _tighten(item)
        return
    if not isinstance(node, dict):
        return
    for value in node.values():
        _tighten(value)
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in node and "type" not in node:
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        node["additionalProperties"] = False


@dataclass
class DocResult:
    """The outcome for one YAML document of a manifest file."""

    label: str                 # "k8s/raycluster.yaml#1 RayCluster/rayft"
    checked: bool              # False: no CRD for its apiVersion/kind (e.g. a Secret)
    errors: list[str]


def read_manifests(path: str | Path) -> list[dict]:
    """The non-empty YAML documents of a (multi-document) manifest file."""
    path = Path(path)
    try:
        docs = list(yaml.load_all(path.read_text(encoding="utf-8"), Loader=_LOADER))
    except FileNotFoundError:
        raise ManifestError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ManifestError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return [d for d in docs if d is not None]


def validate_file(path: str | Path, crds: CrdSchemas) -> list[DocResult]:
    return [validate_doc(doc, crds, f"{path}#{i}") for i, doc in enumerate(read_manifests(path), 1)]


def validate_doc(doc: Any, crds: CrdSchemas, where: str = "manifest") -> DocResult:
    if not isinstance(doc, dict):
        return DocResult(where, True, ["the document is not a mapping (expected apiVersion, kind, metadata, spec)"])
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    name = (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), dict) else None
    label = f"{where} {kind}/{name}"
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return DocResult(label, True, ["apiVersion and kind must be strings"])
    validator = crds.validator(api_version, kind)
    if validator is None:
        return DocResult(label, False, [])
    errors = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    return DocResult(label, True, [_describe(e) for e in errors])


def dotted(path: Any) -> str:
    """`spec.workerGroupSpecs[0].template` from a jsonschema path."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def _describe(error: jsonschema.ValidationError) -> str:
    where = dotted(error.absolute_path)
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(known)) if isinstance(error.instance, dict) else []
        parts = []
        for key in unknown:
            hint = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            parts.append(f"{where}.{key}: unknown field" + (f"; did you mean '{hint[0]}'?" if hint else "")
                         + " (Kubernetes would silently drop it)")
        if parts:
            return "\n".join(parts)
    if error.validator == "anyOf" and error.schema.get("x-kubernetes-int-or-string"):
        return f"{where}: expected an integer or a string (quote quantities such as '0.5'), got {error.instance!r}"
    if error.validator == "pattern" and error.schema.get("x-kubernetes-int-or-string"):
        return f"{where}: {error.instance!r} is not a Kubernetes quantity (e.g. 4, 500m, 16Gi)"
    if error.validator == "type":
        return f"{where}: expected {_types(error.validator_value)}, got {_json_type(error.instance)} {error.instance!r}"
    if error.validator == "enum":
        return f"{where}: {error.instance!r} is not one of {', '.join(map(repr, error.validator_value))}"
    return f"{where}: {error.message}"


def _types(value: Any) -> str:
    return " or ".join(value) if isinstance(value, list) else str(value)


def _json_type(value: Any) -> str:
    for name, kind in (("boolean", bool), ("integer", int), ("number", float), ("string", str),
                       ("array", list), ("object", dict)):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def _crd_documents(path: Path) -> Iterator[dict]:
    """The CRDs in a file: plain documents, or a `kind: List` (as `kubectl get crd -o yaml` writes)."""
    found = False
    for doc in read_manifests(path):
        items = doc.get("items", []) if doc.get("kind") == "List" else [doc]
        for item in items:
            if isinstance(item, dict) and item.get("kind") == "CustomResourceDefinition":
                found = True
                yield item
    if not found:
        raise ManifestError(f"{path}: no CustomResourceDefinition in this file (get one with "
                            "`kubectl get crd rayjobs.ray.io -o yaml` or from the KubeRay Helm chart's crds/)")
