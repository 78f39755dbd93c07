"""Label config <-> the judge's questions, through label-studio-sdk's ``LabelInterface``.

One place parses a config (which object tags read which ``$fields``, which controls to fill and with
what) and one place turns a verdict into Label Studio result JSON, validated against the config, so a
label the config does not have can never reach Label Studio.
"""
from __future__ import annotations

import hashlib
import json
import logging
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

from label_studio_sdk.label_interface import LabelInterface

from ..judge.types import Question, Verdict

log = logging.getLogger(__name__)

JUDGED_TAGS = ("Choices", "Rating", "Number", "Taxonomy", "Pairwise")
RATIONALE_TAG = "TextArea"
MAX_NUMBER_OPTIONS = 11  # integer ranges up to this size are scored as options (0..10 included)
# Every option is spelled out in the prompt (and a local model scores each one): a config asking about
# a million options would cost millions of tokens per task. Refused at /setup with this bound.
MAX_OPTIONS = 200
MAX_QUESTIONS = 16  # controls the judge fills per task: each is at least one provider call per task
MAX_CONFIG_CHARS = 200_000


class SchemaError(ValueError):
    """The label config cannot be used; the message says what is wrong in it."""


@dataclass(frozen=True)
class ControlSpec:
    name: str
    tag: str
    to_name: tuple[str, ...]
    question: Question
    taxonomy_paths: tuple[tuple[str, ...], ...] = ()


@dataclass
class TaskSchema:
    """What a project's config asks for: input fields, controls to fill, where the rationale goes."""

    config: str
    inputs: dict[str, str]  # object tag name -> task data key
    controls: dict[str, ControlSpec]
    rationale_control: str | None
    config_hash: str
    interface: LabelInterface = field(repr=False, compare=False)
    _regions: dict = field(default_factory=dict, repr=False, compare=False)  # validated regions, by answer

    @property
    def data_fields(self) -> list[str]:
        return list(dict.fromkeys(self.inputs.values()))

    def questions(self, selected: Iterable[str] = ()) -> list[Question]:
        """The questions to ask; ``selected`` restricts them to named controls (extra_params 'control')."""
        selected = tuple(selected)
        unknown = [n for n in selected if n not in self.controls]
        if unknown:
            raise SchemaError(
                f"control {unknown[0]!r} is not in the label config; it has: {', '.join(self.controls)}"
            )
        names = selected or tuple(self.controls)
        if len(names) > MAX_QUESTIONS:
            raise SchemaError(
                f"the judge would fill {len(names):,} controls per task, each a provider call per task; at most "
                f"{MAX_QUESTIONS} are accepted: name the ones to judge in extra_params "
                f"{{\"control\": [...]}} (first controls: {', '.join(names[:3])})")
        return [self.controls[n].question for n in names]

    def build_result(self, verdict: Verdict) -> list[dict[str, Any]]:
        """Label Studio result JSON for the usable answers (and the rationale), validated."""
        regions: list[dict[str, Any]] = []
        for name, answer in verdict.usable.items():
            region = self._region(name, answer.value)
            if answer.confidence is not None:  # no region `meta`: Label Studio copies it into the annotation of
                region["score"] = round(float(answer.confidence), 4)  # whoever accepts the prediction
            regions.append(region)
        if regions and verdict.rationale and self.rationale_control:
            region = self._region(self.rationale_control, None)
            region["value"]["text"] = [verdict.rationale]
            regions.append(region)
        return regions

    def _region(self, name: str, value: Any) -> dict[str, Any]:
        """A fresh copy of the validated region for (control, value). Building and validating one
        through the SDK costs ~0.4 ms, so each distinct answer is built once per schema (bulk
        labeling writes thousands of identical regions); ``value`` None is the rationale's template."""
        key = (name, tuple(value) if isinstance(value, list) else value)
        cached = self._regions.get(key)
        if cached is None:
            control = self.interface.get_control(name)
            if value is None:
                cached = json.loads(control.label(text=[""]).to_json())
                cached.pop("id", None)
            else:
                cached = _region_for(self.controls[name], control, value)
            # The SDK's own Pairwise regions (from_name == to_name, as Label Studio stores them) fail its
            # validator; their value was checked against ("left", "right") when the answer was parsed.
            if cached["type"] != "pairwise":
                errors = self.interface.validate_prediction({"result": [cached]}, return_errors=True)
                if errors:  # a bug in our mapping, not in the user's data: refuse rather than send it
                    raise SchemaError(f"built a result the config rejects: {errors[0]}")
            if len(self._regions) < 10_000:
                self._regions[key] = cached
        return json.loads(json.dumps(cached))

    def pair_fields(self) -> tuple[str, str, str] | None:
        """(preference control, data key of response A, of response B) when the config compares two
        responses: a Pairwise tag, or a Choices whose options are A/B (and maybe Tie)."""
        for name, spec in self.controls.items():
            if spec.tag == "Pairwise":
                return name, self.inputs[spec.to_name[0]], self.inputs[spec.to_name[1]]
        for name, spec in self.controls.items():
            opts = {o.lower() for o in spec.question.options}
            if spec.tag == "Choices" and spec.question.kind == "single" and opts in ({"a", "b"}, {"a", "b", "tie"}):
                keys = list(self.inputs.values())
                a = next((k for k in keys if k.lower().endswith("_a")), None)
                b = next((k for k in keys if k.lower().endswith("_b")), None)
                if a and b:
                    return name, a, b
        return None

    def answers_from_result(self, result: Any) -> tuple[dict[str, Any], str | None]:
        """A human annotation's result as the judge's answers (per control) and its rationale text.
        Values the config no longer allows are dropped, so an old annotation cannot teach a stale label;
        a region that cannot be read (stored before it was checked, or from a changed config) is skipped,
        never raised: one bad record must not break every later read of its project."""
        answers: dict[str, Any] = {}
        rationale = None
        for region in result if isinstance(result, list) else []:
            try:
                name, value = self._read_region(region)
            except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError):
                continue
            if name is None:
                continue
            if name == self.rationale_control:
                # Label Studio marks a region copied from a prediction and left as it was: the judge's words,
                # not the reviewer's, so they never come back as a human example's reasoning
                if not (isinstance(region, dict) and region.get("origin") == "prediction"):
                    rationale = value
            else:
                answers[name] = value
        return answers, rationale

    def problems(self, result: Any) -> list[str]:
        """Why regions of a human result cannot be used as answers to this config (empty when all can):
        the webhook ingestion quarantines such an annotation instead of storing it."""
        out = []
        for i, region in enumerate(result if isinstance(result, list) else []):
            if not isinstance(region, dict) or region.get("from_name") not in self.controls:
                continue
            try:
                name, _ = self._read_region(region)
            except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as exc:
                out.append(f"result[{i}] ({region.get('from_name')}): {exc}")
                continue
            if name is None and any(region.get("value", {}).get(k) not in (None, [], "") for k in
                                    ("choices", "rating", "number", "taxonomy", "selected")):
                out.append(f"result[{i}] ({region['from_name']}): the value is not one of the config's options")
        return out

    def _read_region(self, region: Any) -> tuple[str | None, Any]:
        """(control name, answer) of one region, (None, None) for a region without a usable answer;
        raises ValueError/TypeError naming what is malformed."""
        if not isinstance(region, dict):
            raise TypeError(f"a region must be an object, got {type(region).__name__}")
        name, value = region.get("from_name"), region.get("value")
        if not isinstance(value, dict):
            raise TypeError(f"value must be an object, got {type(value).__name__}")
        if name == self.rationale_control:
            text = value.get("text")
            if not text:
                return None, None
            return name, " ".join(map(str, text)) if isinstance(text, list) else str(text)
        spec = self.controls.get(name) if isinstance(name, str) else None
        if spec is None:
            return None, None
        q = spec.question
        answer: Any = None
        if spec.tag == "Choices" and value.get("choices"):
            choices = value["choices"]
            if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
                raise TypeError("choices must be a list of strings")
            picked = [c for c in choices if c in q.options]
            answer = picked if q.kind == "multiple" else (picked[0] if len(picked) == 1 else None)
        elif spec.tag == "Rating" and value.get("rating") is not None:
            answer = str(_whole(value["rating"], "rating"))
        elif spec.tag == "Number" and value.get("number") is not None:
            number = value["number"]
            if isinstance(number, bool) or not isinstance(number, (int, float)) or number != number:
                raise TypeError(f"number must be a number, got {number!r}"[:80])
            answer = str(_whole(number, "number")) if q.kind == "single" else float(number)
        elif spec.tag == "Taxonomy" and value.get("taxonomy"):
            path = value["taxonomy"][0]
            if not isinstance(path, list) or not all(isinstance(p, str) for p in path):
                raise TypeError("taxonomy must be a list of paths (lists of strings)")
            answer = " / ".join(path)
        elif spec.tag == "Pairwise" and value.get("selected"):
            if not isinstance(value["selected"], str):
                raise TypeError("selected must be 'left' or 'right'")
            answer = value["selected"]
        if answer is None or (q.kind == "single" and answer not in q.options):
            return None, None
        return name, answer


def _whole(value: Any, what: str) -> int:
    """An integer-valued number (5 or 5.0), or ValueError naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
            or not float(value).is_integer():
        raise ValueError(f"{what} must be a whole number, got {value!r}"[:80])
    return int(value)


def is_correction(schema: TaskSchema, human: list[dict], judge: list[dict]) -> bool:
    """True when the human's answers differ from the judge's on any control the judge filled."""
    mine, _ = schema.answers_from_result(human)
    theirs, _ = schema.answers_from_result(judge)
    return any(mine.get(name) != value for name, value in theirs.items())


def _region_for(spec: ControlSpec, control: Any, value: Any) -> dict[str, Any]:
    q = spec.question
    if spec.tag == "Choices":
        labels = list(value) if q.kind == "multiple" else [value]
        region = control.label(labels)
    elif spec.tag == "Rating":
        region = control.label(rating=int(value))
    elif spec.tag == "Number":
        region = control.label(number=float(value))
    elif spec.tag == "Taxonomy":
        region = control.label(taxonomy=[list(spec.taxonomy_paths[q.options.index(value)])])
    elif spec.tag == "Pairwise":
        region = control.label(value)
    else:  # pragma: no cover - guarded by JUDGED_TAGS
        raise SchemaError(f"unsupported control {spec.tag}")
    out = json.loads(region.to_json())
    out.pop("id", None)
    return out


def parse_label_config(config: str) -> TaskSchema:
    """Parse a label config into a TaskSchema; raise SchemaError with a readable message."""
    if not isinstance(config, str):
        raise SchemaError(f"label config must be an XML string, got {type(config).__name__}")
    if not config.strip():
        raise SchemaError("label config is empty")
    if len(config) > MAX_CONFIG_CHARS:
        raise SchemaError(f"label config is {len(config):,} characters; at most {MAX_CONFIG_CHARS:,} are accepted")
    try:
        root = ET.fromstring(config)
    except ET.ParseError as exc:
        raise SchemaError(f"label config is not valid XML: {exc}") from None
    named = Counter(str(el.get("name")) for el in root.iter() if el.get("name"))
    repeated = sorted(n for n, k in named.items() if k > 1)
    if repeated:  # the SDK keeps the last one silently; Label Studio's editor cannot hold both
        raise SchemaError(f"label config names {len(repeated)} tag(s) twice: {', '.join(map(repr, repeated[:5]))}; "
                          "every tag's name must be unique")
    try:
        interface = LabelInterface(config)
    except Exception as exc:  # the SDK raises a variety of types for bad configs
        raise SchemaError(f"label config could not be parsed: {exc}") from None

    inputs = {
        obj.name: obj.value.lstrip("$")
        for obj in interface.objects
        if isinstance(getattr(obj, "value", None), str) and obj.value.startswith("$")
    }
    elements = {el.get("name"): el for el in root.iter() if el.get("name")}
    objects = {obj.name for obj in interface.objects}
    controls: dict[str, ControlSpec] = {}
    rationale = None
    for control in interface.controls:
        dangling = [t for t in (control.to_name or ()) if t not in objects]
        if dangling:  # every control, judged or not: Label Studio itself refuses such a config
            raise SchemaError(f"{control.tag} {control.name!r} has toName={dangling[0]!r}, which names no object "
                              f"in the config (objects: {', '.join(sorted(objects)) or 'none'})")
        if control.tag == RATIONALE_TAG:
            rationale = rationale or control.name
            continue
        if control.tag not in JUDGED_TAGS:
            continue
        spec = _control_spec(control, elements.get(control.name))
        missing = [t for t in spec.to_name if t not in objects]
        if missing:
            raise SchemaError(f"{spec.tag} {spec.name!r} has toName={missing[0]!r}, which names no object in "
                              f"the config (objects: {', '.join(sorted(objects)) or 'none'})")
        if len(spec.question.options) > MAX_OPTIONS:
            raise SchemaError(f"{spec.tag} {spec.name!r} asks about {len(spec.question.options):,} options; the judge "
                              f"takes at most {MAX_OPTIONS} per control (each option is spelled out in every prompt)")
        controls[control.name] = spec
    if not controls:
        tags = sorted({c.tag for c in interface.controls}) or ["none"]
        raise SchemaError(
            "label config has no control the judge can fill (supported: "
            f"{', '.join(JUDGED_TAGS)}; found: {', '.join(tags)})"
        )
    digest = hashlib.sha256(config.encode()).hexdigest()[:12]
    return TaskSchema(config, inputs, controls, rationale, digest, interface)


def _control_spec(control: Any, element: ET.Element | None) -> ControlSpec:
    tag, name, to_name = control.tag, control.name, tuple(control.to_name or ())
    attr = control.attr or {}
    hint = attr.get("hint") or ""  # a Choices hint doubles as the judge's instruction for it
    if tag == "Choices":
        labels = tuple(control.labels)
        if not labels:
            raise SchemaError(f"Choices {name!r} has no <Choice> values")
        kind: Literal["single", "multiple"] = "multiple" if attr.get("choice") == "multiple" else "single"
        return ControlSpec(name, tag, to_name, Question(name, kind, labels, instruction=hint))
    if tag == "Rating":
        try:
            top = int(attr.get("maxRating", 5))
        except ValueError:
            raise SchemaError(f"Rating {name!r} has maxRating={attr.get('maxRating')!r}, not a whole number") from None
        if not 1 <= top <= MAX_OPTIONS:
            raise SchemaError(f"Rating {name!r} has maxRating={top}; the judge takes 1 to {MAX_OPTIONS}")
        options = tuple(str(i) for i in range(1, top + 1))
        return ControlSpec(name, tag, to_name, Question(name, "single", options, instruction=hint))
    if tag == "Number":
        lo, hi = _num(attr.get("min")), _num(attr.get("max"))
        step = _num(attr.get("step")) or 1
        if lo is not None and hi is not None and float(lo).is_integer() and float(hi).is_integer() \
                and step == 1 and 0 < hi - lo + 1 <= MAX_NUMBER_OPTIONS:
            options = tuple(str(i) for i in range(int(lo), int(hi) + 1))
            return ControlSpec(name, tag, to_name, Question(name, "single", options, minimum=lo, maximum=hi))
        return ControlSpec(name, tag, to_name, Question(name, "number", minimum=lo, maximum=hi))
    if tag == "Taxonomy":
        paths = tuple(_taxonomy_paths(element)) if element is not None else ()
        if not paths:
            raise SchemaError(f"Taxonomy {name!r} has no <Choice> values")
        options = tuple(" / ".join(p) for p in paths)
        return ControlSpec(name, tag, to_name, Question(name, "single", options), taxonomy_paths=paths)
    if tag == "Pairwise":
        if len(to_name) != 2:
            raise SchemaError(f"Pairwise {name!r} must name exactly two objects in toName")
        return ControlSpec(name, tag, to_name, Question(name, "single", ("left", "right"), display=("A", "B")))
    raise SchemaError(f"unsupported control {tag}")  # pragma: no cover


def _taxonomy_paths(element: ET.Element, prefix: tuple[str, ...] = ()) -> Iterable[tuple[str, ...]]:
    for child in element:
        value = child.get("value")
        if child.tag != "Choice" or value is None:
            continue
        path = prefix + (value,)
        yield path
        yield from _taxonomy_paths(child, path)


def _num(raw: str | None) -> float | None:
    if raw in (None, ""):
        return None
    try:
        return float(raw)
    except ValueError:
        raise SchemaError(f"Number attribute {raw!r} is not a number") from None
