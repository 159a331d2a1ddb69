"""A whole cluster in virtual time: the workload generator's user model, the scheduler's
:class:`~symphony_scheduler.core.SchedulerCore` with a real policy, and one
:class:`~symphony_nodesched.simnode.SimNode` per engine, driven by one discrete-event loop.

These are the very objects the live services run; only the shell differs. The live services talk
over gRPC, so every message here crosses one network hop of ``hop_s`` (client -> scheduler ->
node and back), and nodes report their status to the scheduler every ``heartbeat_s``, as the live
node schedulers do. The loop keeps exactly ``users`` sessions active, as the generator does.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from symphony.tokens import count_text_tokens, prompt_token_count
from symphony.v1 import common_pb2
from symphony_nodesched.convert import engine_request, node_status, registration, summary
from symphony_nodesched.events import Finished, FirstToken, TransferDone
from symphony_nodesched.profile import Profile
from symphony_nodesched.simnode import SimNode
from symphony_scheduler.commands import Command, PrepareCommand, ReleaseCommand
from symphony_scheduler.core import SchedulerCore
from symphony_scheduler.policies import default_registry
from symphony_workloadgen.dataset import Conversation
from symphony_workloadgen.metrics import TurnRecord
from symphony_workloadgen.session import SessionPlan, SessionPlanner, UserModel

Action = Callable[[float], None]

# The memory tiers of the system each policy stands for (DESIGN.md, "Baselines are first-class"):
# round_robin and least_loaded are a plain vLLM fleet (engine-local prefix cache on the GPU only);
# sticky is session affinity with host-memory offload (InferCept, CachedAttention); prefix_aware
# (llm-d's precise prefix scorer with GPU / CPU / disk tier weights) and symphony use every tier.
SYSTEM_TIERS = {
    "round_robin": "gpu",
    "least_loaded": "gpu",
    "sticky": "gpu+host",
    "prefix_aware": "gpu+host+disk",
    "symphony": "gpu+host+disk",
}
TIER_CHOICES = ("auto", "gpu", "gpu+host", "gpu+host+disk")


def node_profile(profile: Profile, tiers: str, policy: str) -> Profile:
    """The profile with the host and disk tiers the scenario's system has (``auto``: by policy)."""
    chosen = SYSTEM_TIERS.get(policy, "gpu+host+disk") if tiers == "auto" else tiers
    if chosen not in TIER_CHOICES[1:]:
        raise ValueError(f"unknown tiers {tiers!r}; choose one of {', '.join(TIER_CHOICES)}")
    update: dict[str, int] = {}
    if "host" not in chosen:
        update["host_kv_bytes"] = 0
    if "disk" not in chosen:
        update["disk_kv_bytes"] = 0
    return profile.model_copy(update=update) if update else profile


@dataclass(frozen=True)
class Scenario:
    profile: Profile
    policy: str
    users: int
    conversations: Sequence[Conversation]
    user_model: UserModel = field(default_factory=UserModel)
    nodes: int = 8
    duration_s: float = 600.0
    warmup_s: float = 60.0
    seed: int = 0
    heartbeat_s: float = 1.0
    hop_s: float = 0.0005  # one network hop (client <-> scheduler <-> node)
    lease_s: float = 5.0
    tiers: str = "auto"  # see SYSTEM_TIERS


@dataclass
class SimOutcome:
    """Everything one scenario produced; :mod:`symphony_cluster.sim.report` turns it into figures."""

    scenario: Scenario
    records: list[TurnRecord]
    cached_by_tier: Counter[str] = field(default_factory=Counter)
    recomputed_tokens: int = 0
    transfer_bytes: Counter[str] = field(default_factory=Counter)  # "src->dst" -> bytes
    route_reasons: Counter[str] = field(default_factory=Counter)
    advice_outcomes: Counter[str] = field(default_factory=Counter)
    imbalance_samples: list[float] = field(default_factory=list)  # max / median node load
    sessions_started: int = 0
    sessions_finished: int = 0
    sessions_cut_by_context: int = 0
    events_processed: int = 0


@dataclass
class _Session:
    plan: SessionPlan
    history: list[common_pb2.ChatMessage] = field(default_factory=list)
    turn: int = 0


class VirtualCluster:
    def __init__(self, scenario: Scenario) -> None:
        if scenario.users < 1 or scenario.nodes < 1:
            raise ValueError("a scenario needs at least one user and one node")
        self.sc = scenario
        self.now = 0.0
        self._heap: list[tuple[float, int, Action]] = []
        self._seq = itertools.count()
        self.nodes = {
            f"node-{i}": SimNode(
                node_profile(scenario.profile, scenario.tiers, scenario.policy), f"node-{i}", rng_seed=i
            )
            for i in range(scenario.nodes)
        }
        self._node_gen = dict.fromkeys(self.nodes, 0)
        self._node_seq = itertools.count()
        self.core = SchedulerCore(default_registry().create(scenario.policy), lease_s=scenario.lease_s)
        for node_id, node in self.nodes.items():
            self.core.register_node(registration(node_id, node_id, node.info), 0.0)
        self.planner = SessionPlanner(scenario.conversations, scenario.user_model, seed=scenario.seed)
        self.out = SimOutcome(scenario, [])
        self._inflight: dict[str, tuple[_Session, TurnRecord, common_pb2.TurnRequest]] = {}
        self._req_ids = itertools.count()
        self._core_wakes: set[float] = set()

    # -- the loop ------------------------------------------------------------------------------------
    def at(self, t: float, action: Action) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), action))

    def run(self) -> SimOutcome:
        for _ in range(self.sc.users):
            self._start_session(0.0)
        self.at(self.sc.heartbeat_s, self._heartbeat)
        end = self.sc.duration_s
        n = 0
        while self._heap:
            t, _, action = heapq.heappop(self._heap)
            if t > end:
                break
            self.now = t
            action(t)
            n += 1
        self.out.events_processed = n
        self.out.route_reasons = Counter(self.core.route_reasons)
        self.out.advice_outcomes = Counter(self.core.advice_outcomes)
        # Turns still running at the end are neither counted as served nor as failed.
        self.out.records = [r for r in self.out.records if r.finished == r.finished or r.error]
        return self.out

    # -- nodes ---------------------------------------------------------------------------------------
    def _wake(self, node_id: str) -> None:
        """(Re)schedules the node's next internal event; older wake-ups become no-ops."""
        t = self.nodes[node_id].next_event_time()
        self._node_gen[node_id] += 1
        if t is None:
            return
        gen = self._node_gen[node_id]
        self.at(max(t, self.now), lambda now: self._advance(node_id, gen, now))

    def _advance(self, node_id: str, gen: int, now: float) -> None:
        if gen != self._node_gen[node_id]:
            return
        for ev in self.nodes[node_id].advance(now):
            if isinstance(ev, FirstToken):
                self._first_token(ev)
            elif isinstance(ev, Finished):
                self._finished(node_id, ev)
            elif isinstance(ev, TransferDone):
                self.out.transfer_bytes[f"{ev.src}->{ev.dst}"] += ev.nbytes
        self._wake(node_id)

    def _execute(self, commands: Sequence[Command], t: float) -> None:
        """Carries out the scheduler's orders one hop later, as the live shell's RPCs would."""
        for cmd in commands:
            self.at(t + self.sc.hop_s, functools.partial(self._apply, cmd))

    def _apply(self, cmd: Command, now: float) -> None:
        node = self.nodes.get(cmd.node_id)
        if node is None:
            return
        if isinstance(cmd, PrepareCommand):
            peer = self.nodes.get(cmd.peer_node_id) if cmd.peer_node_id else None
            node.prepare(cmd.session_id, cmd.source, list(cmd.messages), peer, cmd.eta_s, now)
        elif isinstance(cmd, ReleaseCommand):
            node.release(cmd.session_id, cmd.prefetch_only, now)
        self._wake(cmd.node_id)

    def _heartbeat(self, now: float) -> None:
        loads = []
        for node_id, node in self.nodes.items():
            status = node.status(include_sessions=True)
            self.core.node_status(node_status(node_id, status, next(self._node_seq)), now)
            loads.append(status.load.running_requests + status.load.waiting_requests)
        median = statistics.median(loads)
        if median > 0 and now >= self.sc.warmup_s:
            self.out.imbalance_samples.append(max(loads) / median)
        self._execute(self.core.expire(now), now)
        self.at(now + self.sc.heartbeat_s, self._heartbeat)

    # -- sessions ------------------------------------------------------------------------------------
    def _start_session(self, now: float) -> None:
        s = _Session(self.planner.next_session())
        self.out.sessions_started += 1
        self._plan_turn(s, now, previous_answer_chars=0)

    def _plan_turn(self, s: _Session, now: float, previous_answer_chars: int) -> None:
        plan, i = s.plan, s.turn
        planned = now + plan.wait_s(i, previous_answer_chars)
        if plan.turns[i].advise:
            self.at(
                planned - plan.advisory_lead_s(i), lambda t: self._advise(s, i, plan.advisory_lead_s(i), t)
            )
        self.at(planned, lambda t: self._send(s, planned, t))

    def _advise(self, s: _Session, turn: int, eta_s: float, now: float) -> None:
        def at_scheduler(t: float) -> None:
            self._execute(self.core.advise(s.plan.session_id, eta_s, turn, t).commands, t)
            self._wake_core()

        self.at(now + self.sc.hop_s, at_scheduler)

    def _wake_core(self) -> None:
        """Runs the scheduler's deferred advisory decisions when due, as its live timer does."""
        deadline = self.core.next_deadline()
        if deadline is not None and deadline not in self._core_wakes:
            self._core_wakes.add(deadline)

            def due(t: float) -> None:
                self._core_wakes.discard(deadline)
                self._execute(self.core.expire(t), t)
                self._wake_core()

            self.at(max(deadline, self.now), due)

    def _send(self, s: _Session, planned: float, now: float) -> None:
        pt = s.plan.turns[s.turn]
        messages = [*s.history, common_pb2.ChatMessage(role="user", content=pt.prompt)]
        max_tokens = max(1, count_text_tokens(pt.expected_answer))
        if prompt_token_count(messages) + max_tokens > self.sc.profile.max_model_len:
            # The conversation outgrew the model's context: the user starts a new chat.
            self.out.sessions_cut_by_context += 1
            self._end_session(now)
            return
        turn = common_pb2.TurnRequest(
            session_id=s.plan.session_id,
            turn_index=s.turn,
            messages=messages,
            max_tokens=max_tokens,
            ignore_eos=True,
            is_last=pt.is_last,
            expected_response=pt.expected_answer,
            request_id=f"r{next(self._req_ids)}",
        )
        record = TurnRecord(
            session_id=s.plan.session_id,
            session_number=s.plan.number,
            turn_index=s.turn,
            is_last=pt.is_last,
            planned=planned,
            sent=now,
            prompt_chars=len(pt.prompt),
            advised=pt.advise,
            warmup=now < self.sc.warmup_s,
            attempts=1,
        )
        self.out.records.append(record)
        self.at(now + self.sc.hop_s, lambda t: self._route(s, record, turn, t))

    def _route(self, s: _Session, record: TurnRecord, turn: common_pb2.TurnRequest, now: float) -> None:
        decision = self.core.route(turn, now)
        record.node_id, record.route_reason = decision.node_id, decision.reason
        self._execute(decision.commands, now)
        self._inflight[turn.request_id] = (s, record, turn)

        def submit(t: float) -> None:
            self.nodes[decision.node_id].submit(engine_request(turn, turn.request_id), t)
            self._wake(decision.node_id)

        self.at(now + self.sc.hop_s, submit)

    def _first_token(self, ev: FirstToken) -> None:
        item = self._inflight.get(ev.request_id)
        if item is not None:
            item[1].first_token = ev.t + 2 * self.sc.hop_s  # node -> scheduler -> client

    def _finished(self, node_id: str, ev: Finished) -> None:
        item = self._inflight.pop(ev.request_id, None)
        if item is None:
            return  # a warm-up prefill, not a turn
        s, record, turn = item
        r = ev.result
        record.finished = ev.t + 2 * self.sc.hop_s
        record.prompt_tokens, record.output_tokens = r.prompt_tokens, r.completion_tokens
        record.cached_tokens = r.cached_tokens
        record.answer_chars = len(turn.expected_response)
        if not record.warmup:
            self.out.cached_by_tier.update(r.cached_by_tier)
            self.out.recomputed_tokens += r.recomputed_tokens
        done = summary(turn, turn.request_id, node_id, record.route_reason, r)
        t_sched = ev.t + self.sc.hop_s
        answer = turn.expected_response
        self.at(t_sched, lambda t: self._execute(self.core.turn_finished(done, turn.is_last, t, answer), t))
        s.history = [*turn.messages, common_pb2.ChatMessage(role="assistant", content=answer)]
        pt = s.plan.turns[s.turn]
        if pt.spurious_after and not pt.is_last:
            half_read = s.plan.reading_s(len(answer)) / 2
            eta, coming = s.plan.spurious_eta_s(s.turn), s.turn + 1
            self.at(record.finished + half_read, lambda t: self._advise(s, coming, eta, t))
        if pt.is_last:
            self._end_session(record.finished)
            return
        s.turn += 1
        self._plan_turn(s, record.finished, previous_answer_chars=len(answer))

    def _end_session(self, now: float) -> None:
        self.out.sessions_finished += 1
        self.at(now, self._start_session)
