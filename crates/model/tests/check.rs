//! Runs the model checker over every interleaving within the bounds; any counterexample
//! fails the test, with the path that leads to it.

use ferry_model::Protocol;
use stateright::{Checker, Model};

const RAN_AFTER_RECORDED: &str =
    "a redelivered or re-dispatched copy taken after the task's result was recorded never runs";

/// The production protocol with one task, no retries and no faults: each test names
/// what it changes.
fn base() -> Protocol {
    Protocol {
        tasks: 1,
        max_retries: 0,
        endpoint_crashes: 0,
        worker_deaths: 0,
        forwarder_crashes: 0,
        duplicate_reports: 0,
        endpoint_losses: 0,
        broker_losses: 0,
        server_crashes: 0,
        record_before_confirm: false,
        block_ends: 0,
        message_losses: 0,
        requeue_stranded: true,
        check_redelivered: true,
        check_redispatched: true,
    }
}

fn check(model: Protocol) -> usize {
    let checker = model.checker().spawn_bfs().join();
    checker.assert_properties();
    let states = checker.unique_state_count();
    println!("explored {states} states");
    states
}

#[test]
fn one_task_through_crashes_deaths_duplicates_and_reordering() {
    let states = check(Protocol {
        max_retries: 1,
        endpoint_crashes: 1,
        worker_deaths: 2,
        forwarder_crashes: 1,
        duplicate_reports: 1,
        ..base()
    });
    assert!(
        states > 1000,
        "the model explores the interleavings ({states} states)"
    );
}

#[test]
fn blocks_that_end_under_a_task_cost_it_no_retry() {
    // No retries at all: a task survives its block ending twice (with the endpoint
    // crashing and reports coming twice) only if those ends are not charged.
    check(Protocol {
        endpoint_crashes: 1,
        duplicate_reports: 1,
        block_ends: 2,
        ..base()
    });
}

#[test]
fn a_block_ends_under_a_task_whose_endpoint_is_declared_lost() {
    check(Protocol {
        endpoint_losses: 1,
        block_ends: 2,
        ..base()
    });
}

#[test]
fn a_block_end_and_a_worker_death_on_one_task() {
    check(Protocol {
        max_retries: 1,
        worker_deaths: 1,
        duplicate_reports: 1,
        block_ends: 1,
        ..base()
    });
}

#[test]
fn two_tasks_interleaved() {
    check(Protocol {
        tasks: 2,
        max_retries: 1,
        worker_deaths: 1,
        ..base()
    });
}

#[test]
fn one_task_whose_endpoint_is_lost_and_comes_back() {
    check(Protocol {
        max_retries: 1,
        endpoint_crashes: 1,
        forwarder_crashes: 1,
        endpoint_losses: 2,
        ..base()
    });
}

#[test]
fn one_task_whose_dispatch_rabbitmq_loses() {
    check(Protocol {
        max_retries: 1,
        endpoint_crashes: 1,
        worker_deaths: 1,
        forwarder_crashes: 1,
        broker_losses: 2,
        ..base()
    });
}

/// (The sweep for stranded tasks would rescue it: it is off here.)
#[test]
fn recording_waiting_for_ep_before_the_confirm_strands_a_task_the_broker_lost() {
    let checker = Protocol {
        broker_losses: 1,
        record_before_confirm: true,
        requeue_stranded: false,
        ..base()
    }
    .checker()
    .spawn_bfs()
    .join();
    assert!(
        checker.discovery("every task reaches a terminal state").is_some(),
        "the old order must leave a task stuck in waiting-for-ep"
    );
}

#[test]
fn a_task_whose_message_vanishes_is_published_again() {
    check(Protocol {
        endpoint_crashes: 1,
        forwarder_crashes: 1,
        duplicate_reports: 1,
        message_losses: 2,
        ..base()
    });
}

#[test]
fn two_tasks_and_a_vanishing_message() {
    check(Protocol {
        tasks: 2,
        message_losses: 1,
        ..base()
    });
}

#[test]
fn a_vanishing_message_with_a_block_end_and_an_endpoint_loss() {
    check(Protocol {
        endpoint_losses: 1,
        block_ends: 1,
        message_losses: 1,
        ..base()
    });
}

#[test]
fn without_the_sweep_a_vanished_message_strands_its_task() {
    let checker = Protocol {
        message_losses: 1,
        requeue_stranded: false,
        ..base()
    }
    .checker()
    .spawn_bfs()
    .join();
    assert!(
        checker.discovery("every task reaches a terminal state").is_some(),
        "a task whose message vanished must wait for ever without the sweep"
    );
}

#[test]
fn a_redelivered_message_runs_no_task_whose_result_was_recorded() {
    let model = |check_redelivered| Protocol {
        endpoint_crashes: 1,
        check_redelivered,
        ..base()
    };
    let property = RAN_AFTER_RECORDED;
    // With the check: no counterexample to it, to one result per task or to liveness
    // (the properties that say "sometimes" need retries, which this model has not).
    let checker = model(true).checker().spawn_bfs().join();
    for always in [
        property,
        "at most one result per task",
        "every task reaches a terminal state",
    ] {
        assert!(checker.discovery(always).is_none(), "{always}");
    }
    let checker = model(false).checker().spawn_bfs().join();
    assert!(
        checker.discovery(property).is_some(),
        "without the check a crash between the result and the ack runs the task again"
    );
}

/// A re-dispatch (a lost endpoint's sweep, a retry after a lost worker) leaves two copies
/// of a later attempt; one runs and its result is recorded. The endpoint drops the other
/// while it remembers that result; after a crash only `still_to_run` does. So does a
/// sweep that crashes between publishing attempt+1 and recording it, while the endpoint
/// it thought lost records the older attempt's result: the newer copy then finds the
/// task finished, which the endpoint never remembered.
#[test]
fn a_re_dispatched_copy_runs_no_task_whose_result_was_recorded() {
    let model = |endpoint_crashes, forwarder_crashes, check_redispatched| Protocol {
        max_retries: 1,
        endpoint_crashes,
        worker_deaths: 1,
        forwarder_crashes,
        endpoint_losses: 1,
        check_redispatched,
        ..base()
    };
    for (endpoint_crashes, forwarder_crashes) in [(1, 0), (0, 1)] {
        check(model(endpoint_crashes, forwarder_crashes, true));
        let checker = model(endpoint_crashes, forwarder_crashes, false)
            .checker()
            .spawn_bfs()
            .join();
        assert!(
            checker.discovery(RAN_AFTER_RECORDED).is_some(),
            "without the check a re-dispatched copy runs after the recorded result \
             ({endpoint_crashes} endpoint crash, {forwarder_crashes} forwarder crash)"
        );
    }
    // Without crashes the endpoint's memory is enough.
    let checker = model(0, 0, false).checker().spawn_bfs().join();
    assert!(checker.discovery(RAN_AFTER_RECORDED).is_none());
}

#[test]
fn a_colocated_server_that_crashes_loses_its_in_memory_submissions_and_nothing_else() {
    // `ferry-server`: the submissions queue lives in its memory. Its crashes (with the
    // endpoint crashing and a worker dying) cost the task nothing but time: the sweeper
    // submits again what stayed `received`.
    check(Protocol {
        max_retries: 1,
        endpoint_crashes: 1,
        worker_deaths: 1,
        server_crashes: 2,
        ..base()
    });
}
