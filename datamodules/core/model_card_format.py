"""The model-card format every layer agrees on: the JSON Schema file and its validation.

``matcv submit`` (the harness) checks the card it writes into a submission, and the leaderboard checks the
committed cards and every submission's card; the harness may not import the leaderboard, so both read the
schema through here. The schema itself is data, ``leaderboard/model_card.schema.json`` (draft 2020-12).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from jsonschema import Draft202012Validator, FormatChecker

CARD_SCHEMA = "matcv-model-card/1"
# matcv/datamodules/core -> matcv/leaderboard, in a checkout and in an installed wheel alike.
LEADERBOARD_DATA = Path(__file__).resolve().parents[2] / "leaderboard"
CARD_SCHEMA_PATH = LEADERBOARD_DATA / "model_card.schema.json"
CARDS_DIR = LEADERBOARD_DATA / "cards"
PRETRAINED_ON = ("none", "imagenet", "in-domain", "other")


class CardError(ValueError):
    """A model card that breaks the schema; the message names the file and the field."""


@lru_cache(maxsize=1)
def card_validator() -> Draft202012Validator:
    schema = json.loads(CARD_SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)  # a broken schema file is a matcv bug: say so, not "bad card"
    # The format checker makes "format": "date" a check rather than an annotation (2020-12 default).
    return Draft202012Validator(schema, format_checker=FormatChecker())


def field_path(path) -> str:
    """A validator error path as the field's name: ``weights.sha256``, ``authors[1]``; ``(card)`` for the root."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(card)"


def card_problems(card) -> list[str]:
    """Every way ``card`` breaks the schema, as ``"<field>: <what is wrong>"`` lines (empty: a valid card).
    Sorted by field, so the first line is stable for messages and tests."""
    problems = []
    for error in card_validator().iter_errors(card):
        # A oneOf whose branch of the right type failed inside (weights without its sha256): that failure is
        # the one to report, not "is not valid under any of the given schemas".
        inner = [e for e in error.context or [] if e.validator != "type"]
        if len(inner) == 1:
            error = inner[0]
        path = list(error.absolute_path)
        if error.validator == "required":  # name the missing field itself, not the object that lacks it
            missing = re.match(r"^'(.+)' is a required property$", error.message)
            if missing:
                problems.append(f"{field_path(path + [missing.group(1)])}: required field missing")
                continue
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = error.schema.get("properties", {})
            problems += [f"{field_path(path + [key])}: unexpected field (allowed: {', '.join(allowed)})"
                         for key in error.instance if key not in allowed]
            continue
        problems.append(f"{field_path(path)}: {_message(error)}")
    return sorted(dict.fromkeys(problems))


def _message(error) -> str:
    """The validator's message, shortened (it quotes the value, which may be long); a oneOf lists what is allowed."""
    message = error.message if len(error.message) <= 200 else error.message[:200] + "…"
    if error.validator in ("oneOf", "anyOf"):
        allowed = [f"a string matching {sub['pattern']}" if "pattern" in sub else str(sub.get("type", sub))
                   for sub in error.schema.get(error.validator, [])]
        message += f" (allowed: {'; '.join(allowed)})"
    return message


def check_card(card, source: str) -> dict:
    """``card`` when it is valid; else ``CardError`` naming ``source`` (a file, or 'metadata.json: card') and
    every field that is wrong."""
    problems = card_problems(card)
    if problems:
        raise CardError(f"{source}: invalid model card: " + "; ".join(problems))
    return card
