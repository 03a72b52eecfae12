"""Update windows, freezes and waves: when may this site take this change?

A store must not restart its tills at 11 a.m. on a Saturday; a plant changes
only in its planned shutdown; nobody touches retail systems in peak season;
a risky change reaches five canary stores before two thousand. The node
decides this alone — it may be offline — from signed data and a clock passed
in, so CI can compute the very same decision for every site before merge.

Public surface:

- documents: :class:`SiteCalendar`, :class:`FleetRollout` (built ``from_spec``
  or ``from_document``), with :class:`WeeklyWindow`, :class:`MaintenanceWindow`,
  :class:`Freeze`, :class:`Wave`; the input :class:`Change`;
- the gate: :func:`decide` → :class:`Apply` | :class:`Wait`, and
  :func:`next_allowed`, its exact prediction; :func:`gate_inputs` (documents
  → calendar and gating rollout), :func:`wave_slot`, :func:`governing_rollout`,
  :func:`hash_bucket`;
- signed inputs: :func:`signed_change` (a range's commits → the site's
  :class:`Change` and the fleets whose waves gate it), shared by the node's
  gate and ``outpost schedule --base`` (:class:`SignedRange` for many sites),
  with :func:`changed_fleets`;
- the schedule: :func:`predict` → :class:`Prediction`, and the pure
  formatters :func:`summarize`, :func:`render_text`, :func:`render_markdown`,
  :func:`render_json`, :func:`render`.

Decisions (each explained where it is implemented):

- DST gap → a window starts at the first instant the local clock shows its
  start or later (the transition); DST overlap → the first occurrence;
  durations are elapsed time (``_zones``).
- A window crossing midnight belongs to the day it starts.
- Freezes are inclusive dates in the *site's* zone, fleet freezes included;
  they beat maintenance windows; only an emergency passes them.
- No windows declared → any time is allowed.
- Waves: first match wins; ``percent`` is cumulative over the fleet by a
  sha256 bucket of ``<fleet>/<site>``; wave ``i`` opens at ``open(i-1) +
  soak(i)`` from the change's committer time; a pause stops every wave that
  had not opened strictly before the pausing commit's committer time.
- Emergency passes windows and freezes, never waves or a pause.

Nothing here reads the clock: ``now``/``after`` are always arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconciler.core.lazy import lazy_names

if TYPE_CHECKING:
    from reconciler.core.schedule._decide import (
        Apply,
        Decision,
        Prediction,
        Wait,
        WaveSlot,
        decide,
        gate_inputs,
        governing_rollout,
        next_allowed,
        predict,
        wave_slot,
    )
    from reconciler.core.schedule._model import (
        Change,
        FleetRollout,
        Freeze,
        Gate,
        LabelExpression,
        LabelSelector,
        MaintenanceWindow,
        SiteCalendar,
        SpecDocument,
        Wave,
        WeeklyWindow,
        hash_bucket,
    )
    from reconciler.core.schedule._promotion import (
        ROLLOUTS_DIR,
        PromotionState,
        RolloutRecord,
        parse_record,
        promotion_state,
        read_records,
        record_path,
    )
    from reconciler.core.schedule._report import (
        FORMATS,
        BlockSummary,
        DaySummary,
        HoldSummary,
        Summary,
        WaveSummary,
        render,
        render_json,
        render_markdown,
        render_text,
        summarize,
        to_json_data,
    )
    from reconciler.core.schedule._signed import (
        FleetDocument,
        SignedChange,
        SignedCommit,
        SignedRange,
        change_time,
        changed_fleets,
        fleet_touched,
        signed_change,
        touched_apps,
    )
    from reconciler.core.schedule._zones import format_local, format_utc, load_zone, resolve

# Each name is imported from its module when first used: validation reads calendars and
# rollouts (`_model`, `_promotion`), a node's gate decides (`_decide`); only `outpost
# schedule` renders reports (`_report`).
_HOME = {
    "Apply": "_decide",
    "Decision": "_decide",
    "Prediction": "_decide",
    "Wait": "_decide",
    "WaveSlot": "_decide",
    "decide": "_decide",
    "gate_inputs": "_decide",
    "governing_rollout": "_decide",
    "next_allowed": "_decide",
    "predict": "_decide",
    "wave_slot": "_decide",
    "Change": "_model",
    "FleetRollout": "_model",
    "Freeze": "_model",
    "Gate": "_model",
    "LabelExpression": "_model",
    "LabelSelector": "_model",
    "MaintenanceWindow": "_model",
    "SiteCalendar": "_model",
    "SpecDocument": "_model",
    "Wave": "_model",
    "WeeklyWindow": "_model",
    "hash_bucket": "_model",
    "ROLLOUTS_DIR": "_promotion",
    "PromotionState": "_promotion",
    "RolloutRecord": "_promotion",
    "parse_record": "_promotion",
    "promotion_state": "_promotion",
    "read_records": "_promotion",
    "record_path": "_promotion",
    "FORMATS": "_report",
    "BlockSummary": "_report",
    "DaySummary": "_report",
    "HoldSummary": "_report",
    "Summary": "_report",
    "WaveSummary": "_report",
    "render": "_report",
    "render_json": "_report",
    "render_markdown": "_report",
    "render_text": "_report",
    "summarize": "_report",
    "to_json_data": "_report",
    "FleetDocument": "_signed",
    "SignedChange": "_signed",
    "SignedCommit": "_signed",
    "SignedRange": "_signed",
    "change_time": "_signed",
    "changed_fleets": "_signed",
    "fleet_touched": "_signed",
    "signed_change": "_signed",
    "touched_apps": "_signed",
    "format_local": "_zones",
    "format_utc": "_zones",
    "load_zone": "_zones",
    "resolve": "_zones",
}


__getattr__ = lazy_names(__name__, _HOME)


__all__ = [
    "FORMATS",
    "ROLLOUTS_DIR",
    "Apply",
    "BlockSummary",
    "Change",
    "DaySummary",
    "Decision",
    "FleetDocument",
    "FleetRollout",
    "Freeze",
    "Gate",
    "HoldSummary",
    "LabelExpression",
    "LabelSelector",
    "MaintenanceWindow",
    "Prediction",
    "PromotionState",
    "RolloutRecord",
    "SignedChange",
    "SignedCommit",
    "SignedRange",
    "SiteCalendar",
    "SpecDocument",
    "Summary",
    "Wait",
    "Wave",
    "WaveSlot",
    "WaveSummary",
    "WeeklyWindow",
    "change_time",
    "changed_fleets",
    "decide",
    "fleet_touched",
    "format_local",
    "format_utc",
    "gate_inputs",
    "governing_rollout",
    "hash_bucket",
    "load_zone",
    "next_allowed",
    "parse_record",
    "predict",
    "promotion_state",
    "read_records",
    "record_path",
    "render",
    "render_json",
    "render_markdown",
    "render_text",
    "resolve",
    "signed_change",
    "summarize",
    "to_json_data",
    "touched_apps",
    "wave_slot",
]
