//! An exhaustive model of Ferry's task protocol, checked with
//! [stateright](https://docs.rs/stateright).
//!
//! The model has tasks, Redis records, the submissions queue, the endpoint's queue (with
//! redelivery of unacked messages after an endpoint crash), reports to the forwarder
//! (delivered in any order, possibly twice), an endpoint that can crash, workers that can
//! die under a task, a forwarder that can crash between publishing and acking, and a
//! forwarder that declares the endpoint lost (its heartbeats stopped: it crashed, or
//! is only cut off and still running) and may crash half-way through that. Every
//! change of a record goes through [`ferry_proto::state::transition`], the function
//! production uses. The checker explores every interleaving within the bounds and checks:
//!
//! - at most one result is recorded per task;
//! - within an attempt a task never moves backwards, and terminal states absorb;
//! - the batch's per-state counters match the records (so they sum to its size);
//! - every task reaches a terminal state once nothing else can happen (liveness).
//!
//! Two rules keep liveness, and the checker finds a stuck task without either:
//! - a retry after a lost worker goes through the broker: the endpoint publishes the task
//!   again with attempt+1 before it reports the loss and acks the old message, so a
//!   redelivered message never carries an attempt older than the record's without a
//!   newer message behind it;
//! - an endpoint holding a task that receives a newer attempt of it (a copy published
//!   before the forwarder crashed, then the retry) drops the older one for the newer;
//!   older copies are acked at once.
//!
//! A third rule covers RabbitMQ dying while the forwarder dispatches a task (the message
//! it published and the unconfirmed submission both lost): `waiting-for-ep` is recorded
//! only after the broker's confirm, so such a task still reads `received` and the
//! sweeper submits it again. Recording first (`record_before_confirm`) strands it, and
//! the checker finds that too.
//!
//! The forwarder holds a dispatched task's `waiting-for-ep` record (its submission
//! unacked meanwhile): the record is written with the first endpoint report on the task
//! that the forwarder applies, just before it, or on its own later; then the submission
//! is acked. A forwarder crash drops what it held, and the submission comes again.
//!
//! A `ferry-server` (web-service and forwarder in one process) keeps the submissions
//! queue in its memory: its crash (`server_crashes`) loses every submission not yet
//! acked with the records the forwarder held. Its tasks still read `received` (the
//! third rule again), and the sweeper submits them once more.
//!
//! A lost endpoint's tasks follow the first rule too: the forwarder publishes each
//! in-flight task as attempt+1 before it records `endpoint-lost` (the broker's
//! redelivery of the old attempt carries reports that are stale by then).
//!
//! So does a task whose block ends under it (`block_ends`): the endpoint republishes it
//! as attempt+1 with one retry more, then reports `block-ended`; records keep their
//! retries (`r`) as the script does. With no worker deaths, no task may fail: a block's
//! end costs a task nothing, whatever crashes and duplicates come with it.
//!
//! An endpoint given a message again after it crashed (`redelivered`) runs a copy only
//! when the task is unfinished and not dispatched again since as a newer attempt
//! (`check_redelivered`, production's `still_to_run`): a redelivered copy taken after
//! the task's result was recorded never runs. Without the check the checker finds one
//! that does. The endpoint asks the same of a fresh message carrying a re-dispatched
//! copy (attempt > 0, `check_redispatched`): a re-dispatch can leave a copy behind the
//! one that runs (a lost endpoint's sweep and the endpoint's own retry both publish the
//! next attempt; a sweep that crashed between publishing and recording leaves a newer
//! copy of a task whose older attempt then records its result). The endpoint remembers
//! the results it published, with their attempt, and drops copies no newer (`finished`),
//! but forgets them when it crashes, and never had the older attempt's result in the
//! second case; without the check the checker finds such a copy running after the
//! recorded result, with either crash. Not covered: a fresh copy of the first attempt (a
//! forwarder that crashed after publishing publishes the task again); it is dropped
//! while the endpoint remembers the result, and may run after the endpoint crashed.
//!
//! And so does a task whose message vanishes from the endpoint's queue while the
//! endpoint does not hold it (`message_losses`: a purge, another consumer, the broker
//! losing it; also a message that came back when the endpoint crashed): the forwarder's
//! sweep publishes it again as attempt+1, then records `requeued` (a task
//! `waiting-for-ep`: one retry more) or `endpoint-lost` (a task the record says is in
//! flight). The sweep acts only on what production can see: the endpoint idle (it holds
//! no task), its queue empty, and no report on the task on its way (production waits a
//! bound and looks twice, the reports queues drained both times). Without the sweep
//! (`requeue_stranded: false`) the checker finds the task stuck.

use ferry_proto::state::{Outcome, TaskStatus, transition};
use ferry_proto::{Event, EventKind, TaskState};
use stateright::{Model, Property};

/// The bounds of one check.
#[derive(Debug, Clone)]
pub struct Protocol {
    pub tasks: usize,
    pub max_retries: u32,
    pub endpoint_crashes: u8,
    pub worker_deaths: u8,
    pub forwarder_crashes: u8,
    pub duplicate_reports: u8,
    /// Times the forwarder declares the endpoint lost.
    pub endpoint_losses: u8,
    /// Times RabbitMQ dies while the forwarder dispatches a task: the endpoint-queue
    /// message it published and the (unconfirmed) submission are both gone.
    pub broker_losses: u8,
    /// Times a `ferry-server` (web-service and forwarder in one process, the
    /// submissions queue in its memory) crashes: every submission not yet acked is gone
    /// with it, and so are the forwarder's held records.
    pub server_crashes: u8,
    /// Model the forwarder recording `waiting-for-ep` before the broker's confirm (the
    /// old order): with a broker loss the checker then finds a task stuck.
    pub record_before_confirm: bool,
    /// Times the block running a task ends under it (walltime, cancel, preemption): the
    /// endpoint republishes the task as attempt+1 with one retry more, then reports
    /// `BlockEnded`.
    pub block_ends: u8,
    /// Times a message the endpoint has not taken vanishes from its queue.
    pub message_losses: u8,
    /// The forwarder's sweep publishes a stranded `waiting-for-ep` task again.
    pub requeue_stranded: bool,
    /// An endpoint given a message again (after it crashed holding it) runs a copy only
    /// if the task is unfinished and not dispatched again since as a newer attempt
    /// (`POST /v1/endpoints/{id}/still_to_run`); without it a recorded task runs again.
    pub check_redelivered: bool,
    /// The same check for a fresh message carrying a re-dispatched copy (attempt > 0);
    /// without it such a copy runs after its task's result was recorded, when the
    /// endpoint crashed since (forgetting the results it remembered) or a sweep raced
    /// the result.
    pub check_redispatched: bool,
}

/// A task's record in Redis, plus what the checker watches.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Record {
    pub state: TaskState,
    pub attempt: u32,
    /// The record's retries (`r`): grows by one with each `BlockEnded`.
    pub max_retries: u32,
    /// Results recorded (terminal events that carried a result and applied).
    pub results: u8,
    /// Set if an applied event ever moved the task backwards within an attempt, or moved
    /// a terminal task.
    pub violated: bool,
}

/// Where the endpoint is with a task it holds.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Stage {
    Received,
    Assigned,
    Started,
    /// The result is published; the message is not acked yet.
    Published,
    /// The worker died (or the block ended) and the retry is published; the loss (this
    /// event's code) is not reported yet.
    Republished(u8),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Held {
    pub attempt: u32,
    /// The retries the message said the task has.
    pub max_retries: u32,
    pub stage: Stage,
    /// The copy was redelivered or re-dispatched (attempt > 0), and the task's result
    /// was recorded when the endpoint took it.
    pub recorded_at_take: bool,
}

/// A message on the endpoint's queue.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct Message {
    pub task: usize,
    pub attempt: u32,
    pub max_retries: u32,
    pub delivered: bool,
    /// The broker gives it again (the endpoint crashed holding it).
    pub redelivered: bool,
}

/// A report on its way to the forwarder.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct Report {
    pub task: usize,
    pub kind: u8,
    pub attempt: u32,
    /// A result: it carries the task's steps of its attempt (received, assigned,
    /// started), applied before its event in one script call, as production does.
    pub result: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct State {
    pub records: Vec<Record>,
    /// The batch's tasks per state, moved with every applied transition as the
    /// transition script moves its counters (all tasks are one batch).
    pub counts: [u8; 7],
    pub submissions: Vec<bool>,
    /// Sorted: the queue's order does not matter to the properties.
    pub queue: Vec<Message>,
    /// Sorted: reports may be delivered in any order.
    pub reports: Vec<Report>,
    pub held: Vec<Option<Held>>,
    pub endpoint_crashes: u8,
    pub worker_deaths: u8,
    pub forwarder_crashes: u8,
    pub duplicate_reports: u8,
    pub endpoint_losses: u8,
    pub broker_losses: u8,
    pub server_crashes: u8,
    pub block_ends: u8,
    pub message_losses: u8,
    /// Tasks whose `waiting-for-ep` record the forwarder holds (published, confirmed,
    /// submission not acked yet).
    pub held_records: Vec<bool>,
    /// What the endpoint remembers: per task, the attempt whose result it published
    /// (and whose message it acked), to drop copies no newer; forgotten when it crashes.
    pub finished: Vec<Option<u32>>,
    /// Set if a worker ever started a redelivered or re-dispatched copy the endpoint
    /// took after the task's result was recorded.
    pub ran_after_recorded: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The forwarder publishes the task and holds its `waiting-for-ep` record.
    Dispatch(usize),
    /// The forwarder publishes the task, then crashes before recording `waiting-for-ep`
    /// (it publishes first): the endpoint may run it while its record says `received`.
    PublishThenCrash(usize),
    /// The forwarder writes a held record on its own, then acks the submission.
    RecordHeld(usize),
    /// The forwarder crashes holding records: the submissions come again.
    CrashHolding,
    /// A `ferry-server` crashes: the submissions in its memory (acked or not) and the
    /// records it held are gone; the sweeper finds their tasks still `received`.
    ServerCrash,
    /// RabbitMQ dies before confirming what the forwarder published for the task: that
    /// message and the submission are lost, and the forwarder's publish fails.
    BrokerLosesPublish(usize),
    /// The sweeper: a task still `received` with no submission is submitted again from
    /// its record.
    Resubmit(usize),
    DispatchThenCrash(usize),
    Take(usize),
    Assign(usize),
    Start(usize),
    Finish(usize),
    Ack(usize),
    WorkerDies(usize),
    /// The block running the task ends under it.
    BlockEnds(usize),
    ReportLoss(usize),
    EndpointCrash,
    /// The forwarder's sweeper: publish every in-flight task as attempt+1, then record
    /// `endpoint-lost` for each.
    EndpointLost,
    /// The same, crashing after the publishes and before the records.
    EndpointLostThenCrash,
    Deliver(usize),
    Duplicate(usize),
    /// A message the endpoint has not taken vanishes from its queue.
    MessageVanishes(usize),
    /// The forwarder's sweep: a stranded task is published again as attempt+1, then
    /// recorded `requeued` (waiting for its endpoint: one retry more) or `endpoint-lost`
    /// (in flight by its record).
    Requeue(usize),
    /// The same, crashing after the publish and before the record.
    RequeueThenCrash(usize),
}

mod moves;
use moves::{in_flight, report};

impl Protocol {
    /// Whether the endpoint asks `still_to_run` before running the copies of this
    /// message: one given again, or one carrying a re-dispatched copy (attempt > 0).
    fn asks(&self, m: &Message) -> bool {
        (self.check_redelivered && m.redelivered) || (self.check_redispatched && m.attempt > 0)
    }
}

impl Model for Protocol {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        // Every task is already `received` (the web-service wrote it and published its
        // submission before answering).
        vec![State {
            records: vec![
                Record {
                    state: TaskState::Received,
                    attempt: 0,
                    max_retries: self.max_retries,
                    results: 0,
                    violated: false,
                };
                self.tasks
            ],
            counts: [self.tasks as u8, 0, 0, 0, 0, 0, 0],
            submissions: vec![true; self.tasks],
            queue: Vec::new(),
            reports: Vec::new(),
            held: vec![None; self.tasks],
            endpoint_crashes: self.endpoint_crashes,
            worker_deaths: self.worker_deaths,
            forwarder_crashes: self.forwarder_crashes,
            duplicate_reports: self.duplicate_reports,
            endpoint_losses: self.endpoint_losses,
            broker_losses: self.broker_losses,
            server_crashes: self.server_crashes,
            block_ends: self.block_ends,
            message_losses: self.message_losses,
            held_records: vec![false; self.tasks],
            finished: vec![None; self.tasks],
            ran_after_recorded: false,
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        for t in 0..self.tasks {
            if s.held_records[t] {
                // The forwarder has the submission (unacked): nothing else dispatches it.
                actions.push(Action::RecordHeld(t));
            } else if s.submissions[t] {
                actions.push(Action::Dispatch(t));
                if s.forwarder_crashes > 0 {
                    actions.push(Action::PublishThenCrash(t));
                    actions.push(Action::DispatchThenCrash(t));
                }
                if s.broker_losses > 0 {
                    actions.push(Action::BrokerLosesPublish(t));
                }
            } else if s.records[t].state == TaskState::Received {
                actions.push(Action::Resubmit(t));
            }
            match s.held[t].as_ref().map(|h| h.stage) {
                Some(Stage::Received) => actions.push(Action::Assign(t)),
                Some(Stage::Assigned) => actions.push(Action::Start(t)),
                Some(Stage::Started) => actions.push(Action::Finish(t)),
                Some(Stage::Published) => actions.push(Action::Ack(t)),
                Some(Stage::Republished(_)) => actions.push(Action::ReportLoss(t)),
                None => {}
            }
            if s.worker_deaths > 0
                && matches!(
                    s.held[t].as_ref().map(|h| h.stage),
                    Some(Stage::Assigned | Stage::Started)
                )
            {
                actions.push(Action::WorkerDies(t));
            }
            if s.block_ends > 0
                && matches!(
                    s.held[t].as_ref().map(|h| h.stage),
                    Some(Stage::Assigned | Stage::Started)
                )
            {
                actions.push(Action::BlockEnds(t));
            }
        }
        for (i, m) in s.queue.iter().enumerate() {
            if !m.delivered {
                actions.push(Action::Take(i));
                if s.message_losses > 0 {
                    actions.push(Action::MessageVanishes(i));
                }
            }
        }
        // The sweep sees an idle endpoint (holding nothing) with an empty queue.
        if self.requeue_stranded && s.queue.is_empty() && s.held.iter().all(Option::is_none) {
            for t in 0..self.tasks {
                let state = s.records[t].state;
                if (state == TaskState::WaitingForEp || in_flight(state))
                    && !s.reports.iter().any(|r| r.task == t)
                {
                    actions.push(Action::Requeue(t));
                    if s.forwarder_crashes > 0 {
                        actions.push(Action::RequeueThenCrash(t));
                    }
                }
            }
        }
        if s.forwarder_crashes > 0 && s.held_records.iter().any(|&h| h) {
            actions.push(Action::CrashHolding);
        }
        if s.server_crashes > 0 && (s.submissions.iter().any(|&q| q) || s.held_records.iter().any(|&h| h)) {
            actions.push(Action::ServerCrash);
        }
        if s.endpoint_crashes > 0
            && (s.held.iter().any(Option::is_some) || s.queue.iter().any(|m| m.delivered))
        {
            actions.push(Action::EndpointCrash);
        }
        if s.endpoint_losses > 0 && s.records.iter().any(|r| in_flight(r.state)) {
            actions.push(Action::EndpointLost);
            if s.forwarder_crashes > 0 {
                actions.push(Action::EndpointLostThenCrash);
            }
        }
        for i in 0..s.reports.len() {
            if i == 0 || s.reports[i] != s.reports[i - 1] {
                actions.push(Action::Deliver(i));
                if s.duplicate_reports > 0 {
                    actions.push(Action::Duplicate(i));
                }
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::PublishThenCrash(t) => {
                // Published, not recorded, not acked: the submission comes again.
                s.push_message(Message {
                    task: t,
                    attempt: 0,
                    max_retries: self.max_retries,
                    delivered: false,
                    redelivered: false,
                });
                s.forwarder_crashes -= 1;
            }
            Action::BrokerLosesPublish(t) => {
                if self.record_before_confirm {
                    s.apply(report(t, EventKind::Queued, 0, false));
                }
                s.submissions[t] = false;
                s.broker_losses -= 1;
            }
            Action::Resubmit(t) => s.submissions[t] = true,
            Action::Dispatch(t) => {
                // Publish to the endpoint's queue (confirmed) and hold the record.
                s.push_message(Message {
                    task: t,
                    attempt: 0,
                    max_retries: self.max_retries,
                    delivered: false,
                    redelivered: false,
                });
                s.held_records[t] = true;
            }
            Action::RecordHeld(t) => {
                s.apply(report(t, EventKind::Queued, 0, false));
                s.held_records[t] = false;
                s.submissions[t] = false;
            }
            Action::CrashHolding => {
                s.held_records = vec![false; self.tasks];
                s.forwarder_crashes -= 1;
            }
            Action::ServerCrash => {
                s.held_records = vec![false; self.tasks];
                s.submissions = vec![false; self.tasks];
                s.server_crashes -= 1;
            }
            Action::DispatchThenCrash(t) => {
                // Publish, record waiting-for-ep, crash before the ack: the submission
                // comes again.
                s.push_message(Message {
                    task: t,
                    attempt: 0,
                    max_retries: self.max_retries,
                    delivered: false,
                    redelivered: false,
                });
                s.apply(report(t, EventKind::Queued, 0, false));
                s.forwarder_crashes -= 1;
            }
            Action::Take(i) => {
                let m = s.queue[i].clone();
                s.queue[i].delivered = true;
                let record = &s.records[m.task];
                let still_to_run = !record.state.is_terminal() && record.attempt <= m.attempt;
                let remembered = s.finished[m.task].is_some_and(|a| m.attempt <= a);
                if (self.asks(&m) && !still_to_run) || remembered {
                    // Not still to run, or a copy of a result the endpoint published:
                    // acked without running.
                    s.ack(m.task, m.attempt);
                    return Some(s);
                }
                let recorded_at_take = (m.redelivered || m.attempt > 0) && record.results > 0;
                let held = s.held[m.task].as_ref().map(|h| h.attempt);
                if held.is_some_and(|a| a >= m.attempt) {
                    // A copy no newer than the one held: acked at once.
                    s.ack(m.task, m.attempt);
                } else {
                    // A newer attempt supersedes the one held, whose reports are stale
                    // from now on: its message is acked.
                    if let Some(old) = held {
                        s.ack(m.task, old);
                    }
                    s.held[m.task] = Some(Held {
                        attempt: m.attempt,
                        max_retries: m.max_retries,
                        stage: Stage::Received,
                        recorded_at_take,
                    });
                    s.push_report(report(m.task, EventKind::Received, m.attempt, false));
                }
            }
            Action::Assign(t) | Action::Start(t) | Action::Finish(t) => {
                let h = s.held[t].as_mut().expect("held");
                let (kind, stage) = match action {
                    Action::Assign(_) => (EventKind::Assigned, Stage::Assigned),
                    Action::Start(_) => (EventKind::Started, Stage::Started),
                    _ => (EventKind::Succeeded, Stage::Published),
                };
                h.stage = stage;
                let attempt = h.attempt;
                if kind == EventKind::Started && h.recorded_at_take {
                    s.ran_after_recorded = true;
                }
                s.push_report(report(t, kind, attempt, kind == EventKind::Succeeded));
            }
            Action::Ack(t) => {
                let attempt = s.held[t].take().expect("held").attempt;
                s.ack(t, attempt);
                s.finished[t] = Some(attempt);
            }
            Action::WorkerDies(t) => {
                s.worker_deaths -= 1;
                let h = s.held[t].as_mut().expect("held");
                let status = TaskStatus {
                    state: TaskState::Running,
                    attempt: h.attempt,
                    max_retries: h.max_retries,
                };
                let event = Event {
                    kind: EventKind::Lost,
                    attempt: h.attempt,
                };
                match transition(status, event) {
                    Outcome::Applied(next) if !next.to.is_terminal() => {
                        // Publish the retry first (confirmed), then report the loss.
                        h.stage = Stage::Republished(EventKind::Lost.code());
                        s.push_message(Message {
                            task: t,
                            attempt: next.attempt,
                            max_retries: next.max_retries,
                            delivered: false,
                            redelivered: false,
                        });
                    }
                    _ => {
                        // Out of retries: the loss is the task's result.
                        h.stage = Stage::Published;
                        let attempt = h.attempt;
                        s.push_report(report(t, EventKind::Lost, attempt, true));
                    }
                }
            }
            Action::BlockEnds(t) => {
                s.block_ends -= 1;
                let h = s.held[t].as_mut().expect("held");
                let status = TaskStatus {
                    state: TaskState::Running,
                    attempt: h.attempt,
                    max_retries: h.max_retries,
                };
                let event = Event {
                    kind: EventKind::BlockEnded,
                    attempt: h.attempt,
                };
                let Outcome::Applied(next) = transition(status, event) else {
                    unreachable!("a block's end always sends a running task around again")
                };
                h.stage = Stage::Republished(EventKind::BlockEnded.code());
                s.push_message(Message {
                    task: t,
                    attempt: next.attempt,
                    max_retries: next.max_retries,
                    delivered: false,
                    redelivered: false,
                });
            }
            Action::ReportLoss(t) => {
                let h = s.held[t].take().expect("held");
                let Stage::Republished(kind) = h.stage else {
                    unreachable!("a loss is reported once its retry is published")
                };
                let kind = EventKind::from_code(kind).expect("a loss");
                s.push_report(report(t, kind, h.attempt, false));
                s.ack(t, h.attempt);
            }
            Action::EndpointCrash => {
                s.endpoint_crashes -= 1;
                s.held = vec![None; self.tasks];
                s.finished = vec![None; self.tasks];
                for m in &mut s.queue {
                    m.redelivered |= m.delivered;
                    m.delivered = false;
                }
                s.queue.sort();
            }
            Action::EndpointLost | Action::EndpointLostThenCrash => {
                s.endpoint_losses -= 1;
                let lost: Vec<(usize, u32, u32)> = s
                    .records
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| in_flight(r.state))
                    .map(|(t, r)| (t, r.attempt, r.max_retries))
                    .collect();
                for &(t, attempt, max_retries) in &lost {
                    s.push_message(Message {
                        task: t,
                        attempt: attempt + 1,
                        max_retries,
                        delivered: false,
                        redelivered: false,
                    });
                }
                if action == Action::EndpointLost {
                    for (t, attempt, _) in lost {
                        s.apply_one(report(t, EventKind::EndpointLost, attempt, false));
                    }
                } else {
                    s.forwarder_crashes -= 1;
                }
            }
            Action::Deliver(i) => {
                let r = s.reports.remove(i);
                if s.held_records[r.task] {
                    // The held record goes just before the report, in the same call;
                    // then the submission is acked.
                    s.apply(report(r.task, EventKind::Queued, 0, false));
                    s.held_records[r.task] = false;
                    s.submissions[r.task] = false;
                }
                s.apply(r);
            }
            Action::Duplicate(i) => {
                s.duplicate_reports -= 1;
                let r = s.reports[i];
                s.push_report(r);
            }
            Action::MessageVanishes(i) => {
                s.message_losses -= 1;
                s.queue.remove(i);
            }
            Action::Requeue(t) | Action::RequeueThenCrash(t) => {
                let r = &s.records[t];
                let (attempt, max_retries) = (r.attempt, r.max_retries);
                // A task that never reached its endpoint is not charged.
                let (kind, max_retries) = if r.state == TaskState::WaitingForEp {
                    (EventKind::Requeued, max_retries + 1)
                } else {
                    (EventKind::EndpointLost, max_retries)
                };
                s.push_message(Message {
                    task: t,
                    attempt: attempt + 1,
                    max_retries,
                    delivered: false,
                    redelivered: false,
                });
                if action == Action::Requeue(t) {
                    s.apply_one(report(t, kind, attempt, false));
                } else {
                    s.forwarder_crashes -= 1;
                }
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("at most one result per task", |_, s: &State| {
                s.records.iter().all(|r| r.results <= 1)
            }),
            Property::always(
                "no backward move within an attempt; terminal absorbs",
                |_, s: &State| s.records.iter().all(|r| !r.violated),
            ),
            Property::always(
                "the batch counters match the records and sum to its size",
                |_, s: &State| {
                    let mut want = [0u8; 7];
                    for r in &s.records {
                        want[r.state.code() as usize] += 1;
                    }
                    want == s.counts
                },
            ),
            Property::eventually("every task reaches a terminal state", |_, s: &State| {
                s.records.iter().all(|r| r.state.is_terminal())
            }),
            Property::always(
                "a block's end costs no retry: without worker deaths no task fails",
                |model: &Protocol, s: &State| {
                    model.worker_deaths > 0 || s.records.iter().all(|r| r.state != TaskState::Failed)
                },
            ),
            Property::always(
                "a redelivered or re-dispatched copy taken after the task's result was recorded never runs",
                |_, s: &State| !s.ran_after_recorded,
            ),
            Property::sometimes("a task succeeds on a retry", |_, s: &State| {
                s.records
                    .iter()
                    .any(|r| r.state == TaskState::Success && r.attempt > 0)
            }),
        ]
    }
}
