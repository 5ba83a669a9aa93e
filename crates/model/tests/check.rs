//! Runs the model checker over every interleaving within the bounds; any counterexample
//! fails the test, with the path that leads to it.

use ferry_model::Protocol;
use stateright::{Checker, Model};

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
        tasks: 1,
        max_retries: 1,
        endpoint_crashes: 1,
        worker_deaths: 2,
        forwarder_crashes: 1,
        duplicate_reports: 1,
        endpoint_losses: 0,
    });
    assert!(
        states > 1000,
        "the model explores the interleavings ({states} states)"
    );
}

#[test]
fn two_tasks_interleaved() {
    check(Protocol {
        tasks: 2,
        max_retries: 1,
        endpoint_crashes: 0,
        worker_deaths: 1,
        forwarder_crashes: 0,
        duplicate_reports: 0,
        endpoint_losses: 0,
    });
}

#[test]
fn one_task_whose_endpoint_is_lost_and_comes_back() {
    check(Protocol {
        tasks: 1,
        max_retries: 1,
        endpoint_crashes: 1,
        worker_deaths: 0,
        forwarder_crashes: 1,
        duplicate_reports: 0,
        endpoint_losses: 2,
    });
}
