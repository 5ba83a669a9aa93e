//! The Redis store against a real Redis (`FERRY_TEST_REDIS`, default 127.0.0.1:6379),
//! each test in its own namespace.

use bytes::Bytes;
use ferry_proto::state::{Outcome, TaskStatus, transition};
use ferry_proto::{Actor, EndpointId, Event, EventKind, TaskId, TaskState};
use ferry_store::{Applied, BatchRecord, Finish, NewTask, Report};

mod common;
use common::{batch, event, new_task, one_task, outcome_of, store};

#[tokio::test]
async fn the_script_agrees_with_the_state_machine_on_every_case() {
    let store = store().await;
    let mut cases = 0;
    // A record at attempt 1 meets events of the attempt before, its own and the next;
    // one at the last attempt number (u32::MAX), of the one before and its own.
    let attempts = [(1u32, vec![0u32, 1, 2]), (u32::MAX, vec![u32::MAX - 1, u32::MAX])];
    for state in TaskState::ALL {
        for kind in EventKind::ALL {
            for (record_attempt, event_attempt) in attempts
                .iter()
                .flat_map(|(r, es)| es.iter().map(move |e| (*r, *e)))
            {
                for max_retries in [0u32, 1, 3] {
                    let id = TaskId::new();
                    store
                        .force_task_state(id, state, record_attempt, max_retries)
                        .await
                        .unwrap();
                    let event = Event {
                        kind,
                        attempt: event_attempt,
                    };
                    let expected = transition(
                        TaskStatus {
                            state,
                            attempt: record_attempt,
                            max_retries,
                        },
                        event,
                    );
                    let finish = matches!(kind, EventKind::Succeeded | EventKind::Failed).then(|| Finish {
                        success: kind == EventKind::Succeeded,
                        by_reference: false,
                        data: Bytes::from_static(b"data"),
                        exception: Bytes::new(),
                        stdout: String::new(),
                        stderr: String::new(),
                    });
                    let got = store
                        .apply(&[Report {
                            task_id: id,
                            event,
                            at: 5,
                            by: Actor::Endpoint,
                            from: None,
                            finish,
                        }])
                        .await
                        .unwrap()
                        .pop()
                        .unwrap();
                    let want = match expected.clone() {
                        Outcome::Applied(t) => Applied::Moved {
                            to: t.to,
                            attempt: t.attempt,
                            cause: t.cause,
                        },
                        Outcome::Ignored(i) => Applied::Ignored(i),
                    };
                    assert_eq!(
                        got, want,
                        "{state:?} attempt {record_attempt} (max {max_retries}) + {kind:?} attempt {event_attempt}"
                    );
                    let record = store.get_task(id).await.unwrap().unwrap();
                    if let Applied::Moved { to, attempt, .. } = want {
                        assert_eq!((record.state, record.attempt), (to, attempt));
                        assert_eq!(record.history.last().unwrap().state, to);
                        if let Outcome::Applied(t) = &expected {
                            assert_eq!(
                                record.max_retries, t.max_retries,
                                "{state:?} (max {max_retries}) + {kind:?}: the retries the script keeps"
                            );
                        }
                    } else {
                        assert_eq!((record.state, record.attempt), (state, record_attempt));
                    }
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 7 * EventKind::ALL.len() * 5 * 3);
    store.delete_namespace().await.unwrap();
}

/// The batch counters and the endpoint's in-flight set move with every transition, in
/// the same script: they always agree with the task records.
#[tokio::test(flavor = "multi_thread")]
async fn batch_counters_and_in_flight_sets_follow_every_transition() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let store = store().await;
    let endpoint_id = EndpointId::new();
    let tasks: Vec<NewTask> = (0..6).map(|_| new_task()).collect();
    let batch = BatchRecord {
        deadline: Some(5),
        ..batch(endpoint_id, tasks.len() as u64)
    };
    store
        .create_tasks(&batch, &tasks, Actor::WebService)
        .await
        .unwrap();
    let status = store.batch_status(batch.batch_id).await.unwrap().unwrap();
    assert_eq!(status.counts, [6, 0, 0, 0, 0, 0, 0]);
    assert_eq!(store.expired_batches(5, 10).await.unwrap(), vec![batch.batch_id]);
    assert!(store.expired_batches(4, 10).await.unwrap().is_empty());

    // Random event sequences over the six tasks, checked after every step.
    let strategy = proptest::collection::vec((0..6usize, 0..EventKind::ALL.len(), 0..3u32), 1..60);
    let mut runner = TestRunner::new(Config {
        cases: 8,
        failure_persistence: None,
        ..Config::default()
    });
    let runtime = tokio::runtime::Handle::current();
    let result = runner.run(&strategy, |steps| {
        for (t, k, attempt) in steps {
            let (store, batch_id, ids) = (&store, batch.batch_id, &tasks);
            let ok = tokio::task::block_in_place(|| {
                runtime.block_on(async move {
                    store
                        .apply(&[event(ids[t].task_id, EventKind::ALL[k], attempt)])
                        .await
                        .unwrap();
                    let records = store
                        .get_tasks(&ids.iter().map(|t| t.task_id).collect::<Vec<_>>())
                        .await
                        .unwrap();
                    let mut counts = [0u64; 7];
                    let mut running = Vec::new();
                    for r in records.into_iter().flatten() {
                        counts[r.state.code() as usize] += 1;
                        if matches!(
                            r.state,
                            TaskState::WaitingForNodes | TaskState::WaitingForLaunch | TaskState::Running
                        ) {
                            running.push(r.task_id);
                        }
                    }
                    let status = store.batch_status(batch_id).await.unwrap().unwrap();
                    let mut in_flight = store.in_flight(endpoint_id).await.unwrap();
                    in_flight.sort();
                    running.sort();
                    let all_done = counts[5] + counts[6] == 6;
                    status.counts == counts && in_flight == running && status.done_at.is_some() == all_done
                })
            });
            prop_assert!(ok, "counters or in-flight set drifted");
        }
        Ok(())
    });
    result.unwrap();
    store.delete_namespace().await.unwrap();
}

/// A task's priority is kept for a dispatch again; 0 is not written.
#[tokio::test]
async fn a_priority_requirements_retry_policy_and_environment_are_kept_to_dispatch_a_task_again() {
    let store = store().await;
    let endpoint_id = EndpointId::new();
    let b = batch(endpoint_id, 2);
    let requires = ferry_proto::messages::Requires {
        cores: 4,
        memory_mb: 2048,
        gpus: 1,
        tags: vec!["avx512".into(), "big.mem-2".into()],
    };
    let retry = ferry_proto::messages::RetryPolicy {
        on: vec!["ConnectionError".into()],
        backoff_ms: 1000,
        max_backoff_ms: 60_000,
    };
    let urgent = NewTask {
        priority: -7,
        requires: Some(requires.clone()),
        retry: Some(retry.clone()),
        environment: Some("torch".into()),
        ..new_task()
    };
    let plain = new_task();
    store
        .create_tasks(&b, &[urgent.clone(), plain.clone()], Actor::WebService)
        .await
        .unwrap();
    let infos = store
        .redispatch_info(&[urgent.task_id, plain.task_id])
        .await
        .unwrap();
    let kept: Vec<_> = infos
        .into_iter()
        .map(|i| i.unwrap())
        .map(|i| (i.priority, i.requires, i.retry, i.environment))
        .collect();
    assert_eq!(
        kept,
        [
            (-7, Some(requires), Some(retry), Some("torch".to_owned())),
            (0, None, None, None)
        ]
    );
    store.delete_namespace().await.unwrap();
}

/// A task keeps its input (to dispatch it again) until it is terminal.
#[tokio::test]
async fn the_input_is_kept_until_the_task_is_terminal() {
    let store = store().await;
    let endpoint_id = EndpointId::new();
    let (_, task) = one_task(&store, endpoint_id).await;
    let id = task.task_id;
    store
        .apply(&[event(id, EventKind::Queued, 0), event(id, EventKind::Received, 0)])
        .await
        .unwrap();
    let info = store
        .redispatch_info(&[id])
        .await
        .unwrap()
        .pop()
        .flatten()
        .unwrap();
    assert_eq!(
        (info.state, info.attempt, info.endpoint_id),
        (TaskState::WaitingForNodes, 0, endpoint_id)
    );
    assert_eq!(info.payload, task.payload);
    assert_eq!(store.in_flight(endpoint_id).await.unwrap(), vec![id]);
    store
        .apply(&[event(id, EventKind::EndpointLost, 0)])
        .await
        .unwrap();
    assert!(store.in_flight(endpoint_id).await.unwrap().is_empty());
    let info = store
        .redispatch_info(&[id])
        .await
        .unwrap()
        .pop()
        .flatten()
        .unwrap();
    assert_eq!((info.state, info.attempt), (TaskState::WaitingForEp, 1));
    store.apply(&[event(id, EventKind::Cancelled, 1)]).await.unwrap();
    assert_eq!(store.redispatch_info(&[id]).await.unwrap(), vec![None]);
    store.delete_namespace().await.unwrap();
}

/// A large input, kept under its own key, is deleted when the task ends; an inline
/// one with the record's field.
#[tokio::test]
async fn inputs_inline_and_by_reference_go_when_the_task_ends() {
    let store = store().await;
    let endpoint_id = EndpointId::new();
    let b = batch(endpoint_id, 2);
    let inline = new_task();
    let large = NewTask {
        by_reference: true,
        payload: Bytes::from(vec![7u8; 4096]),
        ..new_task()
    };
    store
        .create_tasks(&b, &[inline.clone(), large.clone()], Actor::WebService)
        .await
        .unwrap();
    for t in [&inline, &large] {
        assert_eq!(store.get_input(t.task_id).await.unwrap(), Some(t.payload.clone()));
    }
    let mut ended = Vec::new();
    for t in [&inline, &large] {
        ended.push(event(t.task_id, EventKind::Queued, 0));
        ended.push(event(t.task_id, EventKind::Cancelled, 0));
    }
    store.apply(&ended).await.unwrap();
    for t in [&inline, &large] {
        assert_eq!(store.get_input(t.task_id).await.unwrap(), None, "{:?}", t.task_id);
    }
    store.delete_namespace().await.unwrap();
}

/// Each step keeps the time it was reported with, to the microsecond.
#[tokio::test]
async fn history_steps_keep_their_times() {
    let store = store().await;
    let endpoint_id = EndpointId::new();
    let created = ferry_proto::time::now_micros();
    let b = BatchRecord {
        created_at: created,
        ..batch(endpoint_id, 1)
    };
    let task = new_task();
    store
        .create_tasks(&b, std::slice::from_ref(&task), Actor::WebService)
        .await
        .unwrap();
    let times = [created + 7, created + 1_000_003, created + 86_400_000_001];
    let reports: Vec<Report> = [EventKind::Queued, EventKind::Received, EventKind::Assigned]
        .into_iter()
        .zip(times)
        .map(|(kind, at)| Report {
            at,
            ..event(task.task_id, kind, 0)
        })
        .collect();
    store.apply(&reports).await.unwrap();
    let record = store.get_task(task.task_id).await.unwrap().unwrap();
    let got: Vec<u64> = record.history.iter().map(|h| h.at).collect();
    assert_eq!(got, [created, times[0], times[1], times[2]]);
    store.delete_namespace().await.unwrap();
}

#[tokio::test]
async fn a_task_walks_its_life_cycle_and_keeps_one_result() {
    let store = store().await;
    let (batch, task) = one_task(&store, EndpointId::new()).await;
    let report = |kind, at, finish| Report {
        task_id: task.task_id,
        event: Event { kind, attempt: 0 },
        at,
        by: Actor::Endpoint,
        from: None,
        finish,
    };
    let done = |data: &'static [u8]| {
        Some(Finish {
            success: true,
            by_reference: false,
            data: Bytes::from_static(data),
            exception: Bytes::new(),
            stdout: "hi\n".into(),
            stderr: String::new(),
        })
    };
    let applied = store
        .apply(&[
            report(EventKind::Queued, 2, None),
            report(EventKind::Received, 3, None),
            report(EventKind::Assigned, 4, None),
            report(EventKind::Started, 5, None),
            report(EventKind::Succeeded, 6, done(b"first")),
            report(EventKind::Succeeded, 7, done(b"second")),
        ])
        .await
        .unwrap();
    assert_eq!(applied[5], Applied::Ignored(ferry_proto::Ignored::Terminal));
    let record = store.get_task(task.task_id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Success);
    assert_eq!(record.result.as_deref(), Some("first"));
    assert_eq!(record.stdout.as_deref(), Some("hi\n"));
    assert_eq!(record.completed_at, Some(6));
    let states: Vec<_> = record.history.iter().map(|h| h.state).collect();
    assert_eq!(
        states,
        [
            TaskState::Received,
            TaskState::WaitingForEp,
            TaskState::WaitingForNodes,
            TaskState::WaitingForLaunch,
            TaskState::Running,
            TaskState::Success
        ]
    );
    // The outcome read (by position, no history) says the same, and None for no task.
    let outcomes = store
        .get_task_outcomes(&[task.task_id, TaskId::new()])
        .await
        .unwrap();
    let mut without_history = record.clone();
    without_history.history.clear();
    assert_eq!(outcomes, vec![Some(without_history), None]);
    let briefs = store
        .get_task_briefs(&[task.task_id, TaskId::new()])
        .await
        .unwrap();
    assert_eq!(briefs, vec![Some(outcome_of(&record)), None]);
    let (b, ids) = store.get_batch(batch.batch_id).await.unwrap().unwrap();
    assert_eq!((b.size, ids), (1, vec![task.task_id]));
    store.delete_namespace().await.unwrap();
}

#[tokio::test]
async fn a_report_about_an_unknown_task_says_so() {
    let store = store().await;
    let got = store
        .apply(&[Report {
            task_id: TaskId::new(),
            event: Event {
                kind: EventKind::Queued,
                attempt: 0,
            },
            at: 1,
            by: Actor::Forwarder,
            from: None,
            finish: None,
        }])
        .await
        .unwrap();
    assert_eq!(got, vec![Applied::Unknown]);
}

#[tokio::test]
async fn tokens_map_to_their_user_and_nothing_else() {
    let store = store().await;
    let (user, token) = store.create_user("ada").await.unwrap();
    assert_eq!(store.user_for_token(&token).await.unwrap(), Some(user));
    assert_eq!(store.user_for_token("fy_wrong").await.unwrap(), None);
    store.delete_namespace().await.unwrap();
}

#[tokio::test]
async fn credentials_act_for_their_principal_until_revoked_or_expired() {
    use ferry_store::Principal;
    let store = store().await;
    let (user, first) = store.create_user("ada").await.unwrap();
    let endpoint = EndpointId::new();
    let ep_token = store
        .create_credential(
            Principal::Endpoint {
                endpoint,
                owner: user,
            },
            None,
            Some("laptop"),
        )
        .await
        .unwrap();
    assert!(ep_token.starts_with("fe_"));
    assert_eq!(
        store.principal_for_token(&ep_token).await.unwrap(),
        Some(Principal::Endpoint {
            endpoint,
            owner: user
        })
    );
    assert_eq!(
        store.user_for_token(&ep_token).await.unwrap(),
        None,
        "not a user token"
    );
    // Listed by id, never by token; revoked by id.
    let listed = store.list_credentials(user).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|c| c.id.len() == 16 && !first.contains(&c.id) && !ep_token.contains(&c.id))
    );
    let ep_id = listed
        .iter()
        .find(|c| c.label.as_deref() == Some("laptop"))
        .unwrap()
        .id
        .clone();
    assert!(store.revoke_credential(&ep_id).await.unwrap());
    assert_eq!(store.principal_for_token(&ep_token).await.unwrap(), None);
    assert!(!store.revoke_credential(&ep_id).await.unwrap());
    // An expiring token stops at its time.
    let short = store
        .create_credential(Principal::User(user), Some(1_000_000), None)
        .await
        .unwrap();
    assert_eq!(store.user_for_token(&short).await.unwrap(), Some(user));
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(store.user_for_token(&short).await.unwrap(), None);
    // A deleted endpoint's credentials go with it.
    let again = store
        .create_credential(
            Principal::Endpoint {
                endpoint,
                owner: user,
            },
            None,
            None,
        )
        .await
        .unwrap();
    store.revoke_endpoint_credentials(endpoint).await.unwrap();
    assert_eq!(store.principal_for_token(&again).await.unwrap(), None);
    assert_eq!(store.user_for_token(&first).await.unwrap(), Some(user));
    assert_eq!(store.list_users().await.unwrap().len(), 1);
    store.delete_namespace().await.unwrap();
}

/// One script call applies many tasks' reports at once (a task's several results each
/// in a group of their own): the outcome, the records, the batch counters and the
/// in-flight set are what applying the same reports one at a time gives.
#[tokio::test(flavor = "multi_thread")]
async fn many_reports_in_one_call_act_as_one_at_a_time() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let store = store().await;
    let runtime = tokio::runtime::Handle::current();
    let strategy = proptest::collection::vec(
        proptest::collection::vec((0..5usize, 0..EventKind::ALL.len(), 0..3u32), 1..40),
        1..6,
    );
    let mut runner = TestRunner::new(Config {
        cases: 16,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |slices| {
        let store = &store;
        let ok = tokio::task::block_in_place(|| {
            runtime.block_on(async move {
                // The same five tasks twice: `together` gets each slice in one call,
                // `alone` one report per call.
                let endpoint = EndpointId::new();
                let together: Vec<NewTask> = (0..5).map(|_| new_task()).collect();
                let alone: Vec<NewTask> = (0..5).map(|_| new_task()).collect();
                let (b1, b2) = (batch(endpoint, 5), batch(EndpointId::new(), 5));
                store
                    .create_tasks(&b1, &together, Actor::WebService)
                    .await
                    .unwrap();
                store.create_tasks(&b2, &alone, Actor::WebService).await.unwrap();
                let report = |id: TaskId, k: usize, attempt: u32| {
                    let kind = EventKind::ALL[k];
                    Report {
                        from: None,
                        finish: matches!(kind, EventKind::Succeeded | EventKind::Failed).then(|| Finish {
                            success: kind == EventKind::Succeeded,
                            by_reference: false,
                            data: Bytes::from(format!("{k}-{attempt}")),
                            exception: Bytes::new(),
                            stdout: "out".into(),
                            stderr: String::new(),
                        }),
                        ..event(id, kind, attempt)
                    }
                };
                for slice in &slices {
                    let batched: Vec<Report> = slice
                        .iter()
                        .map(|&(t, k, a)| report(together[t].task_id, k, a))
                        .collect();
                    let got = store.apply(&batched).await.unwrap();
                    let mut want = Vec::new();
                    for &(t, k, a) in slice {
                        want.extend(store.apply(&[report(alone[t].task_id, k, a)]).await.unwrap());
                    }
                    if got != want {
                        return Err(format!("outcomes differ: {got:?} vs {want:?}"));
                    }
                }
                let ids = |tasks: &[NewTask]| tasks.iter().map(|t| t.task_id).collect::<Vec<_>>();
                let left = store.get_tasks(&ids(&together)).await.unwrap();
                let right = store.get_tasks(&ids(&alone)).await.unwrap();
                let mut counts = [0u64; 7];
                let mut running = Vec::new();
                for (l, r) in left.into_iter().zip(right) {
                    let (l, r) = (l.unwrap(), r.unwrap());
                    let steps = |t: &ferry_store::TaskRecord| {
                        t.history
                            .iter()
                            .map(|h| (h.state, h.attempt, h.cause))
                            .collect::<Vec<_>>()
                    };
                    if (l.state, l.attempt, l.cause, &l.result, &l.traceback, steps(&l))
                        != (r.state, r.attempt, r.cause, &r.result, &r.traceback, steps(&r))
                    {
                        return Err(format!("records differ: {l:?} vs {r:?}"));
                    }
                    counts[l.state.code() as usize] += 1;
                    if (2..=4).contains(&l.state.code()) {
                        running.push(l.task_id);
                    }
                }
                let status = store.batch_status(b1.batch_id).await.unwrap().unwrap();
                let mut in_flight = store.in_flight(endpoint).await.unwrap();
                in_flight.sort();
                running.sort();
                if status.counts != counts || in_flight != running {
                    return Err(format!(
                        "counts {:?} vs {counts:?}, in flight {in_flight:?} vs {running:?}",
                        status.counts
                    ));
                }
                Ok(())
            })
        });
        prop_assert!(ok.is_ok(), "{}", ok.unwrap_err());
        Ok(())
    });
    result.unwrap();
    store.delete_namespace().await.unwrap();
}

#[tokio::test]
async fn an_endpoint_reports_only_its_own_tasks() {
    let store = store().await;
    let (mine, theirs) = (EndpointId::new(), EndpointId::new());
    let (_, task) = one_task(&store, mine).await;
    let id = task.task_id;
    let from = |endpoint, kind| Report {
        from: Some(endpoint),
        ..event(id, kind, 0)
    };
    let applied = store
        .apply(&[
            event(id, EventKind::Queued, 0),
            from(theirs, EventKind::Received),
            from(mine, EventKind::Received),
            from(theirs, EventKind::Assigned),
            event(id, EventKind::Assigned, 0),
            Report {
                finish: Some(Finish {
                    success: true,
                    by_reference: false,
                    data: Bytes::from_static(b"forged"),
                    exception: Bytes::new(),
                    stdout: String::new(),
                    stderr: String::new(),
                }),
                ..from(theirs, EventKind::Succeeded)
            },
        ])
        .await
        .unwrap();
    assert_eq!(applied[5], Applied::Foreign, "a result for another's task");
    // Another endpoint's reports change nothing and say so; Ferry's own and the task's
    // endpoint's apply, in order around them.
    assert!(matches!(
        applied[0],
        Applied::Moved {
            to: TaskState::WaitingForEp,
            ..
        }
    ));
    assert_eq!(applied[1], Applied::Foreign);
    assert!(matches!(
        applied[2],
        Applied::Moved {
            to: TaskState::WaitingForNodes,
            ..
        }
    ));
    assert_eq!(applied[3], Applied::Foreign);
    assert!(matches!(
        applied[4],
        Applied::Moved {
            to: TaskState::WaitingForLaunch,
            ..
        }
    ));
    let record = store.get_task(id).await.unwrap().unwrap();
    assert_eq!(record.history.len(), 4, "{:?}", record.history);
    assert_eq!(record.state, TaskState::WaitingForLaunch);
    // Nor can another endpoint's heartbeat keep it looking alive; its own can.
    store.touch_tasks(theirs, &[id], 77).await.unwrap();
    assert_eq!(store.get_task(id).await.unwrap().unwrap().last_seen, None);
    store.touch_tasks(mine, &[id], 78).await.unwrap();
    assert_eq!(store.get_task(id).await.unwrap().unwrap().last_seen, Some(78));
    store.delete_namespace().await.unwrap();
}

#[tokio::test]
async fn an_endpoints_tasks_waiting_for_it_are_found_from_its_batches() {
    let store = store().await;
    let endpoint = EndpointId::new();
    let batch = batch(endpoint, 2);
    let tasks = [new_task(), new_task()];
    store
        .create_tasks(&batch, &tasks, Actor::WebService)
        .await
        .unwrap();
    let (a, b) = (tasks[0].task_id, tasks[1].task_id);
    let sorted = |mut v: Vec<(TaskId, u32)>| {
        v.sort();
        v
    };
    assert!(
        store
            .waiting_for_endpoint(endpoint, 100)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .apply(&[event(a, EventKind::Queued, 0), event(b, EventKind::Queued, 0)])
        .await
        .unwrap();
    assert_eq!(
        sorted(store.waiting_for_endpoint(endpoint, 100).await.unwrap()),
        sorted(vec![(a, 0), (b, 0)])
    );
    // Requeued: still waiting, at the next attempt, with one retry more.
    store.apply(&[event(a, EventKind::Requeued, 0)]).await.unwrap();
    let record = store.get_task(a).await.unwrap().unwrap();
    assert_eq!(
        (record.state, record.attempt, record.max_retries),
        (TaskState::WaitingForEp, 1, 3)
    );
    assert_eq!(
        record.history.last().unwrap().cause,
        Some(ferry_proto::state::FailureCause::MessageLost)
    );
    store.apply(&[event(b, EventKind::Received, 0)]).await.unwrap();
    assert_eq!(
        store.waiting_for_endpoint(endpoint, 100).await.unwrap(),
        vec![(a, 1)]
    );
    store.apply(&[event(a, EventKind::Received, 1)]).await.unwrap();
    assert!(
        store
            .waiting_for_endpoint(endpoint, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .waiting_for_endpoint(EndpointId::new(), 100)
            .await
            .unwrap()
            .is_empty()
    );
    store.delete_namespace().await.unwrap();
}

#[tokio::test]
async fn still_to_run_keeps_unfinished_copies_no_older_than_the_record() {
    let store = store().await;
    let endpoint = EndpointId::new();
    let batch = batch(endpoint, 2);
    let tasks = [new_task(), new_task()];
    store
        .create_tasks(&batch, &tasks, Actor::WebService)
        .await
        .unwrap();
    let (waiting, done) = (tasks[0].task_id, tasks[1].task_id);
    // One task is dispatched again as attempt 1 (its endpoint was lost); the other went
    // round too and its attempt 1 recorded a result.
    store
        .apply(&[
            event(waiting, EventKind::Queued, 0),
            event(waiting, EventKind::Received, 0),
            event(waiting, EventKind::EndpointLost, 0),
            event(done, EventKind::Queued, 0),
            event(done, EventKind::Requeued, 0),
            Report {
                finish: Some(Finish {
                    success: true,
                    by_reference: false,
                    data: Bytes::from_static(b"done"),
                    exception: Bytes::new(),
                    stdout: String::new(),
                    stderr: String::new(),
                }),
                ..event(done, EventKind::Succeeded, 1)
            },
        ])
        .await
        .unwrap();
    for (id, want) in [(waiting, TaskState::WaitingForEp), (done, TaskState::Success)] {
        let r = store.get_task(id).await.unwrap().unwrap();
        assert_eq!((r.state, r.attempt), (want, 1));
    }
    let copies: Vec<(TaskId, u32)> = [waiting, done, TaskId::new()]
        .into_iter()
        .flat_map(|id| (0..3).map(move |a| (id, a)))
        .collect();
    let run = store.still_to_run(endpoint, &copies).await.unwrap();
    // Of the unfinished task: its current attempt and a newer one (published before the
    // move is recorded), not the older one. Of the finished task and an unknown one:
    // none, whatever the attempt.
    assert_eq!(
        run,
        vec![waiting, waiting],
        "copies (waiting, 1) and (waiting, 2)"
    );
    let only = |a| vec![(waiting, a)];
    assert!(store.still_to_run(endpoint, &only(0)).await.unwrap().is_empty());
    assert_eq!(
        store.still_to_run(endpoint, &only(1)).await.unwrap(),
        vec![waiting]
    );
    assert_eq!(
        store.still_to_run(endpoint, &only(2)).await.unwrap(),
        vec![waiting]
    );
    // Another endpoint's copies are not its own.
    assert!(
        store
            .still_to_run(EndpointId::new(), &only(1))
            .await
            .unwrap()
            .is_empty()
    );
    store.delete_namespace().await.unwrap();
}

#[tokio::test]
async fn a_function_keeps_the_python_its_bytecode_needs_and_none_reads_back_as_none() {
    use ferry_proto::messages::FunctionKind;
    use ferry_proto::{FunctionId, UserId};
    let store = store().await;
    for python in [Some("3.12.1".to_owned()), None] {
        let f = ferry_store::FunctionRecord {
            function_id: FunctionId::new(),
            owner: UserId::new(),
            name: "f".into(),
            kind: FunctionKind::Python,
            code: Bytes::from_static(b"01\nAAAA"),
            description: None,
            created_at: 1,
            public: false,
            shared_with: Vec::new(),
            python: python.clone(),
        };
        store.put_function(&f).await.unwrap();
        let back = store.get_function(f.function_id).await.unwrap().unwrap();
        assert_eq!(back.python, python);
        assert_eq!(back, f);
    }
}

/// The tasks in each unfinished state, all users together: a submission adds to
/// `received`, each transition moves one, an ended task leaves, a report that changes
/// nothing moves nothing.
#[tokio::test]
async fn tasks_in_flight_follow_every_transition() {
    let store = store().await;
    let b = batch(EndpointId::new(), 3);
    let tasks = [new_task(), new_task(), new_task()];
    store.create_tasks(&b, &tasks, Actor::WebService).await.unwrap();
    assert_eq!(store.tasks_in_flight().await.unwrap(), [3, 0, 0, 0, 0]);
    let [a, c, d] = [tasks[0].task_id, tasks[1].task_id, tasks[2].task_id];
    store
        .apply(&[
            event(a, EventKind::Queued, 0),
            event(c, EventKind::Queued, 0),
            event(d, EventKind::Queued, 0),
            event(a, EventKind::Received, 0),
            event(a, EventKind::Assigned, 0),
            event(a, EventKind::Started, 0),
            event(c, EventKind::Received, 0),
        ])
        .await
        .unwrap();
    assert_eq!(store.tasks_in_flight().await.unwrap(), [0, 1, 1, 0, 1]);
    store
        .apply(&[
            event(a, EventKind::Cancelled, 0),
            event(a, EventKind::Started, 0),
            event(d, EventKind::Cancelled, 0),
        ])
        .await
        .unwrap();
    assert_eq!(store.tasks_in_flight().await.unwrap(), [0, 0, 1, 0, 0]);
}
