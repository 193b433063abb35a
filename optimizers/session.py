"""Everything one study needs for one student program, built once per ``compile``/``work`` call.

The template is a copy of the student whose every Fuse knows the whole search pool (teachers at
each searchable temperature, every fusor) and draws through the bank. Trials deep-copy it, so
they share teachers, LMs and the bank, and never touch the student.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import dspy
import optuna
from fusion_dspy.optimizers.bank import CandidateBank
from fusion_dspy.optimizers.cost import CostModel
from fusion_dspy.optimizers.fuses import find_fuses
from fusion_dspy.optimizers.memo import EvaluationMemo
from fusion_dspy.optimizers.objective import Evaluator
from fusion_dspy.optimizers.objective import FusionObjective
from fusion_dspy.optimizers.objective import Metric
from fusion_dspy.optimizers.proposer import InstructionProposer
from fusion_dspy.optimizers.search_space import FuseSpace
from fusion_dspy.optimizers.search_space import InfeasibleConfigError
from fusion_dspy.optimizers.search_space import SearchSpace
from fusion_dspy.optimizers.search_space import resolve_space
from fusion_dspy.optimizers.search_space import variant_name
from fusion_dspy.optimizers.storage import OpenedStorage
from fusion_dspy.optimizers.worker import BUDGET_ATTR

from fusion_dspy import Fuse
from fusion_dspy import FuseSettings
from fusion_dspy import Teacher

__all__ = ["Session", "build_session"]

_logger = logging.getLogger(__name__)

INSTRUCTIONS_ATTR = "fusion_dspy.instructions"
SPACE_ATTR = "fusion_dspy.space"


@dataclasses.dataclass
class Session:
    """A prepared study: the template program, one :class:`FuseSpace` per Fuse, bank, memo, objective."""

    study: optuna.Study
    opened: OpenedStorage
    template: dspy.Module
    spaces: list[FuseSpace]
    bank: CandidateBank
    memo: EvaluationMemo
    evaluator: Evaluator
    objective: FusionObjective

    def baselines(self, student_settings: Mapping[str, FuseSettings], *, singletons: bool) -> list[dict[str, Any]]:
        """Parameters of the trials to run first: the student's configuration, then each teacher alone at N=1.

        The local baseline is why (bundled models on math: naive fusion 24%, the fusor model alone
        68%): with teachers weaker than the fusor, fusion copies their errors and the strong model
        alone wins. Starting from those points lets TPE find it at once instead of hoping to sample it.
        """
        out = [self._params(student_settings)]
        if singletons:
            widest = max(self.spaces, key=lambda s: len(s.teachers))
            for position in range(len(widest.teachers)):
                params: dict[str, Any] = {}
                for space in self.spaces:
                    if space.n_range[0] > 1:
                        return out
                    teacher = space.teachers[min(position, len(space.teachers) - 1)]
                    if not space.can_select([teacher.name]):
                        break  # Named pools without this teacher alone: not a reachable baseline.
                    choices = space.temperature_choices(teacher)
                    params.update(space.params_for(n=1, teachers=[teacher.name], temperature=min(choices)))
                else:
                    out.append(params)
        return out

    def _params(self, settings: Mapping[str, FuseSettings]) -> dict[str, Any]:
        """The student's whole configuration: its fusor is found among the optimizer's by LM."""
        params: dict[str, Any] = {}
        fuses = find_fuses(self.template)
        for space in self.spaces:
            base = settings[space.path]
            fusors = fuses[space.path].pool.fusors
            own = fusors.get(base.fusor)
            fusor = next((name for name in space.fusors if name == base.fusor or (
                own is not None and fusors.get(name) is not None and _same_lm(fusors[name], own))), None)
            guard = base.guard_enabled(fuses[space.path].selector)  # An auto guard as the student resolves it.
            params.update(space.params_of(base.model_copy(update={"guard": guard}), fusor=fusor))
        return params


def _same_lm(a: dspy.BaseLM, b: dspy.BaseLM) -> bool:
    """One LM, or two with the same model and settings (a deep copy of a program copies its LMs)."""
    return a is b or (getattr(a, "model", None) == getattr(b, "model", None)
                      and getattr(a, "kwargs", None) == getattr(b, "kwargs", None))


def build_session(
    *,
    student: dspy.Module,
    trainset: Sequence[dspy.Example],
    valset: Sequence[dspy.Example],
    metric: Metric,
    teachers: Sequence[Teacher] | None,
    fusors: Mapping[str, dspy.BaseLM | None] | None,
    search_space: SearchSpace | Mapping[str, SearchSpace] | None,
    n_range: tuple[int, int],
    instructions: Sequence[str],
    proposer: InstructionProposer | None,
    opened: OpenedStorage,
    study_name: str,
    directions: Sequence[str],
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    use_bank: bool,
    bank_name: str | None,
    cost_model: CostModel,
    minibatch_size: int,
    num_threads: int,
    seed: int,
    context: Mapping[str, Any],
    coordinator: bool,
    wait_timeout: float = 600.0,
) -> Session:
    """Create or load the study and build everything a trial needs (see :class:`Session`)."""
    study = optuna.create_study(storage=opened.storage, study_name=study_name, directions=list(directions),
                                sampler=sampler, pruner=pruner, load_if_exists=True)
    if not coordinator:
        _wait_for_budget(study, wait_timeout)

    # The draws live in the named bank (shared by every study naming it), the scores in the study's own folder.
    root = opened.bank_root if use_bank else None
    bank_dir = None if root is None else root / (bank_name or study_name)
    bank = CandidateBank.open(None if bank_dir is None else bank_dir / "draws.jsonl")
    memo = EvaluationMemo(None if root is None else root / study_name / "evals.jsonl", enabled=use_bank)
    if bank_dir is not None:
        _logger.info("Candidate bank: %s", bank_dir)

    template = student.deepcopy()
    fuses = find_fuses(template)
    spaces_by_path = _spaces_by_path(search_space, fuses)
    pools = {path: _register_pool(fuse, teachers, fusors) for path, fuse in fuses.items()}
    for fuse in fuses.values():
        fuse.store = bank if use_bank else None

    stored_instructions = study.user_attrs.get(INSTRUCTIONS_ATTR)
    spaces = [
        resolve_space(path=path, space=spaces_by_path[path], base=fuse.settings, teachers=pools[path][0],
                      fusors=pools[path][1], instructions=[fuse.prompt.instruction], n_range=n_range)
        for path, fuse in fuses.items()
    ]
    for space in spaces:
        for variant in space.teacher_variants():
            fuses[space.path].register(teachers=[variant])
    if stored_instructions is None:
        proposals = _propose(proposer, template, trainset, spaces) if coordinator else {}
        stored_instructions = {
            space.path: _unique([*space.instructions, *instructions, *proposals.get(space.path, [])])
            for space in spaces
        }
        study.set_user_attr(INSTRUCTIONS_ATTR, stored_instructions)
    else:
        _check_instructions(study_name, stored_instructions, instructions, spaces)
    spaces = [dataclasses.replace(space, instructions=tuple(stored_instructions.get(space.path, space.instructions)))
              for space in spaces]

    fingerprint = [space.fingerprint() for space in spaces]
    known = study.user_attrs.get(SPACE_ATTR)
    if known is None:
        study.set_user_attr(SPACE_ATTR, fingerprint)
    elif known != fingerprint:
        raise ValueError(
            f"Study {study_name!r} was created with another search space (different pool, fusors, N range or "
            "SearchSpace); Optuna cannot mix them. Use a new study_name, or the same teachers, fusors and space."
        )
    aliases = {}  # Pool names -> LM model strings, so a price table may use either.
    for pool_teachers, _, fusor_lms in pools.values():
        aliases.update({t.name: t.lm.model for t in pool_teachers.values() if t.lm is not None})
        aliases.update({name: lm.model for name, lm in fusor_lms.items() if lm is not None})
    evaluator = Evaluator(template=template, metric=metric, examples=valset, memo=memo,
                          cost_model=cost_model.with_aliases(aliases), num_threads=num_threads, context=context)
    objective = FusionObjective(evaluator=evaluator, spaces=spaces, objectives=("quality", "cost")[: len(directions)],
                                minibatch_size=minibatch_size, seed=seed)
    return Session(study=study, opened=opened, template=template, spaces=spaces, bank=bank, memo=memo,
                   evaluator=evaluator, objective=objective)


def _spaces_by_path(search_space: SearchSpace | Mapping[str, SearchSpace] | None,
                    fuses: Mapping[str, Fuse]) -> dict[str, SearchSpace]:
    if search_space is None or isinstance(search_space, SearchSpace):
        return {path: search_space or SearchSpace() for path in fuses}
    unknown = sorted(set(search_space) - set(fuses))
    if unknown:
        raise ValueError(f"search_space names Fuse path(s) {unknown}; the program's Fuse paths are {sorted(fuses)}.")
    return {path: search_space.get(path, SearchSpace()) for path in fuses}


def _register_pool(
    fuse: Fuse, teachers: Sequence[Teacher] | None, fusors: Mapping[str, dspy.BaseLM | None] | None
) -> tuple[dict[str, Teacher], list[str], dict[str, Any]]:
    """Make the optimizer's pool known to ``fuse``; returns (teachers by name, fusor names, fusor LMs)."""
    if teachers is not None:
        fuse.register(teachers=teachers)
        pool_teachers = {t.name: t for t in teachers}
    else:
        pool_teachers = dict(fuse.pool.teachers)
    if fusors is not None:
        fuse.register(fusors=fusors)
        fusor_lms = dict(fusors)
    else:
        fusor_lms = dict(fuse.pool.fusors)
    return pool_teachers, list(fusor_lms), fusor_lms


def _propose(proposer: InstructionProposer | None, template: dspy.Module, trainset: Sequence[dspy.Example],
             spaces: Sequence[FuseSpace]) -> dict[str, list[str]]:
    searched = [s for s in spaces if s.space.instructions and set(s.space.modes) != {"select"}]
    if proposer is None or not searched or not trainset:
        return {}
    settings = {}
    for space in spaces:
        # The grounding run draws from every teacher at the temperature choice nearest its own (the pool
        # knows only the variants when the teacher's own temperature is not a choice), in select mode, under
        # a fusor name the space knows (the student's own may be named otherwise in the optimizer's pool).
        names = [variant_name(t, min(space.temperature_choices(t), key=lambda c, t=t: abs(c - t.temperature)))
                 for t in space.teachers]
        fusor = space.base.fusor if space.base.fusor in space.fusors else space.fusors[0]
        try:
            settings[space.path] = space.settings(n=max(2, len(names)), teachers=names, mode="select", fusor=fusor)
        except InfeasibleConfigError:
            settings[space.path] = space.settings(n=len(names), teachers=names, mode="select", fusor=fusor)
    proposals = proposer.propose(template, trainset, settings)
    return {s.path: proposals.get(s.path, []) for s in searched}


def _check_instructions(study_name: str, stored: Mapping[str, Sequence[str]], requested: Sequence[str],
                        spaces: Sequence[FuseSpace]) -> None:
    """A resumed study keeps the instruction candidates it was created with; refuse new ones, not drop them."""
    for space in spaces:
        missing = [text for text in _unique(requested) if text not in stored.get(space.path, ())]
        if missing:
            raise ValueError(
                f"Study {study_name!r} was created with other fusor instructions for Fuse {space.path!r}; this run "
                f"adds {missing!r}. Optuna cannot add choices to a study's parameter: use a new study_name, or pass "
                "the instructions the study was created with."
            )


def _wait_for_budget(study: optuna.Study, timeout: float) -> None:
    """Workers start only once the coordinator has queued the trials and stored the instructions."""
    deadline = time.monotonic() + timeout
    while BUDGET_ATTR not in study.user_attrs:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"Study {study.study_name!r} was not prepared within {timeout:.0f} s. Start one process without "
                "--worker (the coordinator) for this study; it queues the trials the workers run."
            )
        time.sleep(0.5)


def _unique(texts: Sequence[str]) -> list[str]:
    seen: list[str] = []
    for text in texts:
        text = text.strip()
        if text and text not in seen:
            seen.append(text)
    return seen
