"""Security events: template.yaml's metric filters and queries against the enum in the code.

    .venv/bin/python -m unittest scripts/test_events.py        (from the repository root)

`events.json` is the `Event` enum of shared/src/events.rs as data (a unit test there fails when
it is stale). Every event a metric filter (`$.event = "..."`) or a Logs Insights query
(`event = "..."`, `event in [...]`) of the template names must be in the enum, and every event the
enum marks `alarms` must be counted by at least one metric filter. A mismatch names both sides.
"""

from __future__ import annotations

import json
import re
import sys
import unittest
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from create_tables import CfnLoader  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
EVENTS = ROOT / "events.json"
ENUM = "shared/src/events.rs (events.json)"

FILTER_EVENT = re.compile(r'\$\.event\s*=\s*"?([A-Za-z0-9_.*-]+)"?')
QUERY_EQ = re.compile(r'\bevent\s*=\s*"([^"]+)"')
QUERY_IN = re.compile(r'\bevent\s+in\s*\[([^\]]*)\]')


def load_events(path: Path = EVENTS) -> dict[str, bool]:
    """Event name -> whether it must have a metric filter."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {e["name"]: e["alarms"] for e in data["events"]}


def load_template(path: Path = TEMPLATE) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=CfnLoader)


def _text(value) -> str:
    """A property's text, also inside `!Sub` (read as {"Sub": text} or {"Sub": [text, vars]})."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Sub" in value:
        sub = value["Sub"]
        return sub if isinstance(sub, str) else str(sub[0])
    return ""


def named_events(template: dict) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(event -> metric filters naming it, event -> queries naming it)."""
    filters: dict[str, set[str]] = {}
    queries: dict[str, set[str]] = {}
    for logical, resource in (template.get("Resources") or {}).items():
        kind = resource.get("Type")
        props = resource.get("Properties") or {}
        if kind == "AWS::Logs::MetricFilter":
            for name in FILTER_EVENT.findall(_text(props.get("FilterPattern"))):
                filters.setdefault(name, set()).add(logical)
        elif kind == "AWS::Logs::QueryDefinition":
            text = _text(props.get("QueryString"))
            names = QUERY_EQ.findall(text)
            for group in QUERY_IN.findall(text):
                names += re.findall(r'"([^"]+)"', group)
            for name in names:
                queries.setdefault(name, set()).add(logical)
    return filters, queries


def mismatches(template: dict, events: dict[str, bool]) -> list[str]:
    filters, queries = named_events(template)
    problems = []
    for what, found in (("metric filter", filters), ("query", queries)):
        for name, where in sorted(found.items()):
            if name not in events:
                problems.append(
                    f'template.yaml {what} {", ".join(sorted(where))} matches event "{name}", '
                    f"which {ENUM} does not have"
                )
    for name, alarms in sorted(events.items()):
        if alarms and name not in filters:
            problems.append(
                f'{ENUM} marks event "{name}" as alarming, but no metric filter of template.yaml '
                f'matches it ({{ $.event = "{name}" }})'
            )
    return problems


class EventsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.template = load_template()
        cls.events = load_events()

    def test_the_template_and_the_enum_agree_on_events(self):
        problems = mismatches(self.template, self.events)
        self.assertEqual(problems, [], "\n  " + "\n  ".join(problems))

    def test_the_template_names_events_at_all(self):
        filters, queries = named_events(self.template)
        self.assertIn("auth.failure", filters)
        self.assertIn("auth.throttled", queries)

    def _filter(self, pattern: str) -> dict:
        return {"Type": "AWS::Logs::MetricFilter", "Properties": {"FilterPattern": pattern}}

    def test_the_check_fails_on_a_filter_naming_an_unknown_event(self):
        template = {"Resources": {
            "TypoFilter": self._filter('{ $.event = "auth.failur" }'),
            "Good": self._filter('{ $.event = "auth.failure" && $.scope = "service" }'),
        }}
        problems = mismatches(template, {"auth.failure": True})
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("TypoFilter", problems[0])
        self.assertIn('"auth.failur"', problems[0])
        self.assertIn("shared/src/events.rs", problems[0])

    def test_the_check_fails_on_a_query_naming_an_unknown_event(self):
        template = {"Resources": {"Q": {"Type": "AWS::Logs::QueryDefinition", "Properties": {
            "QueryString": 'filter event in ["auth.failure", "auth.gone"] or event = "x.y"'}}}}
        problems = mismatches(template, {"auth.failure": False})
        self.assertEqual(len(problems), 2, problems)
        self.assertTrue(all("query Q" in p for p in problems), problems)

    def test_the_check_fails_on_an_alarming_event_without_a_filter(self):
        template = {"Resources": {"F": self._filter('{ $.event = "csrf.failure" }')}}
        problems = mismatches(template, {"csrf.failure": True, "mail.send_failed": True, "startup": False})
        self.assertEqual(len(problems), 1, problems)
        self.assertIn('"mail.send_failed"', problems[0])
        self.assertIn("template.yaml", problems[0])


if __name__ == "__main__":
    unittest.main()
