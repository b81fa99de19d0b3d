"""Checkpoints in training order, and what to do with aliases (``best.pt``, ``last.ckpt``,
``latest.pt``, ``final.pt``: names without a number), so that the last checkpoint, the one
verdicts and gates judge, is always the last one training wrote.

- Ordered by step (:mod:`.peek`), then aliases before numbered names at the same step, then by
  name (``step_9`` before ``step_10``).
- Epochs are steps only when no checkpoint of the folder stores a step or a number in its name;
  otherwise a checkpoint that records only its epoch is treated as recording no step.
- Numbers in names that contradict the epochs the same checkpoints store (a later epoch with
  a smaller or equal number: ``acc93``, ``loss37``) are not the training order: those
  checkpoints are placed by their epochs, with a note.
- A checkpoint at the same step as another with the same tensors is a copy: left out, with a
  note. The same step with different tensors: both kept, with a note.
- A checkpoint without a step, when others have one, is never placed by guesswork: it is left
  out of the trajectory with a note (which checkpoint it copies, when it is a copy of one of
  the last ones; else how to analyse it alone).
- When no checkpoint records a step, the times in the names (:mod:`.names`: a date and time,
  a Unix time) order them, else the name order; a note says so. Four digits after a date are
  a time of day, unless the folder's other names of the same form give steps there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from alignctl.runs.checkpoints.formats import natural_key, read_checkpoint
from alignctl.runs.checkpoints.names import (
    clock_as_step,
    name_form,
    number_in_name,
    plain_numbers,
    timestamp_in_name,
)
from alignctl.runs.checkpoints.peek import EPOCH_KEY

_COMPARE = 8  # newest numbered checkpoints an unplaced alias is compared with


@dataclass(frozen=True)
class CheckpointRef:
    path: Path  # the file, or the Hugging Face style folder
    name: str  # file name without suffix, or folder name
    step: int | None  # see alignctl.runs.checkpoints.peek
    step_from: str | None = None  # where the step was read: global_step, name, epoch, ...
    epoch: int | None = None  # the stored epoch of a checkpoint whose step is its name's number


def _is_alias(ref: CheckpointRef) -> bool:
    return number_in_name(ref.name) is None and timestamp_in_name(ref.name) is None


def sort_checkpoints(refs: list[CheckpointRef]) -> list[CheckpointRef]:
    """By step (aliases first at a tie), then name; refs without a step after, by the time
    in their names (those without one last), then name."""

    def key(r: CheckpointRef) -> tuple:
        time = timestamp_in_name(r.name) if r.step is None else None
        return (r.step is None, r.step or 0, time is None, time or (), not _is_alias(r),
                natural_key(r.name))  # fmt: skip

    return sorted(refs, key=key)


def same_weights(a: CheckpointRef, b: CheckpointRef) -> bool:
    """The two checkpoints hold the same tensors under the same names (False if unreadable)."""
    try:
        sa, sb = read_checkpoint(a)[0], read_checkpoint(b)[0]
    except Exception:
        return False
    return sa.keys() == sb.keys() and all(
        sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa
    )


def order_checkpoints(refs: list[CheckpointRef], notes: list[str], same=same_weights) -> list:
    """The trajectory: ``refs`` ordered, copies and unplaceable aliases left out (noted)."""
    if len(refs) <= 1:
        return list(refs)
    refs = _names_against_epochs(_clocks_as_steps(_shared_numbers(refs, notes)), notes)
    by_epoch = {r.path for r in refs if r.step_from == EPOCH_KEY}
    if by_epoch and any(r.step is not None and r.step_from != EPOCH_KEY for r in refs):
        refs = [dataclasses.replace(r, step=None) if r.path in by_epoch else r for r in refs]
    elif by_epoch:
        notes.append(
            f"the steps of {len(by_epoch)} checkpoint(s) are their stored epochs (none stores "
            "step, global_step or iter_num)"
        )
    numbered = sort_checkpoints([r for r in refs if r.step is not None])
    stepless = sort_checkpoints([r for r in refs if r.step is None])
    if not numbered:
        kept = _drop_copies(stepless, notes, same, lambda a, b: True)
        if len(kept) > 1:
            timed = all(timestamp_in_name(r.name) is not None for r in kept)
            notes.append(
                f"no checkpoint records a step: ordered by "
                f"{'the dates and times in their names' if timed else 'name'}, so "
                f"{kept[-1].path.name} is the last one (judged by verdicts and gates)"
            )
        return kept
    kept = _drop_copies(numbered, notes, same, lambda a, b: a.step == b.step)
    last = kept[-1].path.name
    for ref in stepless:
        twin = next((k for k in reversed(kept[-_COMPARE:]) if same(ref, k)), None)
        if twin is not None:
            notes.append(f"left out {ref.path.name}: the same weights as {twin.path.name}")
            continue
        why = "records only an epoch, not a step" if ref.path in by_epoch else "records no step"
        notes.append(
            f"left out {ref.path.name}: it {why}, so its place in training is unknown "
            f"(the last checkpoint is {last}); analyse it alone by passing its path"
        )
    return kept


def _shared_numbers(refs: list[CheckpointRef], notes: list[str]) -> list[CheckpointRef]:
    """``refs`` with the step re-read where every name of one form gives the same number while
    another of their numbers differs from name to name: the shared one is part of the name
    (``ckpt_100_gpt2`` ... ``ckpt_1000_gpt2``, ``100_resnet50``: a model), the one that
    changes is the step (the last such, as for one name); noted."""
    groups: dict[str, list[CheckpointRef]] = {}
    for r in refs:
        if r.step_from == "name":
            groups.setdefault(name_form(r.name), []).append(r)
    steps: dict[Path, int] = {}
    for group in groups.values():
        numbers = [plain_numbers(r.name) for r in group]
        if len(group) < 2 or len({r.step for r in group}) > 1 or len(set(map(len, numbers))) > 1:
            continue
        changing = [i for i in range(len(numbers[0])) if len({n[i] for n in numbers}) > 1]
        if changing:
            steps.update({r.path: n[changing[-1]] for r, n in zip(group, numbers, strict=True)})
            notes.append(
                f"every checkpoint name like {group[0].path.name} has the number "
                f"{group[0].step}: the steps of these {len(group)} are the number that changes "
                "from name to name, not it"
            )
    return [dataclasses.replace(r, step=steps[r.path]) if r.path in steps else r for r in refs]


def _clocks_as_steps(refs: list[CheckpointRef]) -> list[CheckpointRef]:
    """``refs`` with a step for each name whose four digits after a date were read as a time
    of day while names of the same form give steps (``run_20241130_1500`` beside
    ``run_20241130_100``: steps 1500 and 100, not 15:00 and step 100)."""
    forms = {name_form(r.name) for r in refs if r.step_from == "name"}
    if not forms:
        return refs
    out = []
    for r in refs:
        step = clock_as_step(r.name, forms) if r.step_from in (None, EPOCH_KEY) else None
        if step is not None:
            epoch = r.step if r.step_from == EPOCH_KEY else None
            r = dataclasses.replace(r, step=step, step_from="name", epoch=epoch)
        out.append(r)
    return out


def _names_against_epochs(refs: list[CheckpointRef], notes: list[str]) -> list[CheckpointRef]:
    """``refs`` with name-read steps replaced by stored epochs where the two orders disagree."""
    named = sorted(
        (r for r in refs if r.step_from == "name" and r.epoch is not None),
        key=lambda r: (r.epoch, r.step),
    )
    pairs = zip(named, named[1:], strict=False)  # adjacent pairs suffice once sorted
    clash = next(((a, b) for a, b in pairs if a.epoch < b.epoch and a.step >= b.step), None)
    if clash is None:
        return refs
    a, b = clash
    notes.append(
        f"the numbers in the checkpoint names are not the training order ({a.path.name} stores "
        f"epoch {a.epoch}, {b.path.name} epoch {b.epoch}): {len(named)} checkpoint(s) are placed "
        "by their stored epochs"
    )
    moved = {r.path for r in named}
    return [
        dataclasses.replace(r, step=r.epoch, step_from=EPOCH_KEY) if r.path in moved else r
        for r in refs
    ]


def _gives(step: int, step_from: str | None) -> str:
    return f"give step {step} in their names" if step_from == "name" else f"record step {step}"


def _drop_copies(refs: list, notes: list[str], same, comparable) -> list:
    """Leave out each ref holding the same tensors as a comparable kept one (aliases go)."""
    kept: list[CheckpointRef] = []
    for ref in sorted(refs, key=lambda r: (_is_alias(r), natural_key(r.name))):
        peers = [k for k in kept if comparable(k, ref)][-_COMPARE:]
        twin = next((k for k in peers if same(ref, k)), None)
        if twin is not None:
            notes.append(f"left out {ref.path.name}: a copy of {twin.path.name} (same weights)")
            continue
        if peers and ref.step is not None:
            notes.append(
                f"{ref.path.name} and {peers[0].path.name} both {_gives(ref.step, ref.step_from)} "
                "but hold different weights; both are analysed"
            )
        kept.append(ref)
    return sort_checkpoints(kept)
