//! The scaler's bookkeeping with a stand-in scheduler (the real ones are tested in
//! `crates/tests/tests/slurm.rs` and `pbs.rs`): time is passed in, so the rules of
//! backoff, pause and idle scale-in read as they are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::*;
use crate::interchange::BlockLoad;
use crate::provider::Error;

#[derive(Clone, Default)]
struct Scheduler {
    /// Refuse submissions with this message.
    refuse: Arc<Mutex<Option<String>>>,
    /// What `status` answers, by job.
    states: Arc<Mutex<HashMap<JobId, JobStatus>>>,
    submitted: Arc<Mutex<Vec<JobId>>>,
    cancelled: Arc<Mutex<Vec<JobId>>>,
}

impl Provider for Scheduler {
    async fn submit(&self, block: &BlockJob) -> Result<JobId, Error> {
        if let Some(message) = self.refuse.lock().unwrap().clone() {
            return Err(Error::Failed {
                command: "sbatch --parsable submit.sh".into(),
                status: "exit status 1".into(),
                stderr: message,
            });
        }
        let job = JobId(format!("job-{}", block.block_id));
        self.states.lock().unwrap().insert(
            job.clone(),
            JobStatus::new(JobState::Pending, "PENDING", Some("Priority".into())),
        );
        self.submitted.lock().unwrap().push(job.clone());
        Ok(job)
    }

    async fn status(&self, jobs: &[JobId]) -> Result<HashMap<JobId, JobStatus>, Error> {
        let states = self.states.lock().unwrap();
        Ok(jobs
            .iter()
            .filter_map(|j| Some((j.clone(), states.get(j)?.clone())))
            .collect())
    }

    async fn cancel(&self, jobs: &[JobId]) -> Result<(), Error> {
        self.cancelled.lock().unwrap().extend(jobs.iter().cloned());
        let mut states = self.states.lock().unwrap();
        for j in jobs {
            states.insert(j.clone(), JobStatus::new(JobState::Cancelled, "CANCELLED", None));
        }
        Ok(())
    }
}

struct Rig {
    scaler: Scaler<Scheduler>,
    scheduler: Scheduler,
    capacity: watch::Sender<Capacity>,
    _dir: tempfile::TempDir,
    t0: Instant,
}

fn rig(config: &str) -> Rig {
    let config: ProviderConfig = toml::from_str(config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let scheduler = Scheduler::default();
    let (capacity, rx) = watch::channel(Capacity::default());
    let scaler = Scaler::new(scheduler.clone(), config, dir.path(), None, rx);
    Rig {
        scaler,
        scheduler,
        capacity,
        _dir: dir,
        t0: Instant::now(),
    }
}

impl Rig {
    async fn at(&mut self, secs: u64) {
        self.scaler.step(self.t0 + Duration::from_secs(secs)).await;
    }

    fn waiting(&self, tasks: u32) {
        self.capacity.send_modify(|c| c.pending_tasks = tasks);
    }

    fn connect(&self, block: &str, tasks: u32) {
        self.capacity.send_modify(|c| {
            c.blocks.insert(
                block.into(),
                BlockLoad {
                    managers: 1,
                    draining: 0,
                    workers: 2,
                    tasks,
                },
            );
        });
    }

    fn report(&self) -> ProviderReport {
        self.scaler.reports().borrow().clone()
    }

    fn submitted(&self) -> usize {
        self.scheduler.submitted.lock().unwrap().len()
    }
}

#[tokio::test]
async fn refusals_back_off_then_pause_scaling_and_say_why() {
    let mut r = rig("kind = \"slurm\"\nmax_failures = 3\nmin_blocks = 1");
    *r.scheduler.refuse.lock().unwrap() = Some("Invalid partition name specified".into());
    r.at(0).await;
    assert_eq!(r.report().blocks.len(), 1, "one refused block");
    r.at(1).await;
    assert_eq!(r.report().blocks.len(), 1, "the next waits 5 s");
    r.at(5).await;
    assert_eq!(r.report().blocks.len(), 2);
    r.at(14).await;
    assert_eq!(r.report().blocks.len(), 2, "then 10 s");
    r.at(15).await;
    let report = r.report();
    assert_eq!(report.blocks.len(), 3);
    let scaling = report.scaling.unwrap();
    assert!(scaling.starts_with("paused after 3 failed blocks"), "{scaling}");
    assert!(scaling.contains("Invalid partition name specified"), "{scaling}");
    for t in [100, 300, 599] {
        r.at(15 + t).await;
    }
    assert_eq!(r.report().blocks.len(), 3, "paused: nothing for 10 minutes");
    r.at(15 + 600).await;
    assert_eq!(r.report().blocks.len(), 4, "then one try");
    assert_eq!(r.submitted(), 0);
}

#[tokio::test]
async fn a_block_ending_before_any_manager_connected_is_a_failure_and_a_connection_clears_them() {
    let mut r = rig("kind = \"slurm\"\nmin_blocks = 1\npoll_period = \"1s\"");
    r.at(0).await;
    let job = r.scheduler.submitted.lock().unwrap()[0].clone();
    r.scheduler.states.lock().unwrap().insert(
        job,
        JobStatus::new(JobState::Failed, "FAILED", Some("NonZeroExitCode".into())),
    );
    r.at(1).await;
    let report = r.report();
    assert_eq!(report.blocks[0].state, "failed");
    let reason = report.blocks[0].reason.clone().unwrap();
    assert!(reason.contains("before any manager connected"), "{reason}");
    assert!(report.scaling.unwrap().starts_with("backing off after 1"));
    r.at(6).await;
    assert_eq!(r.submitted(), 2, "tried again after the backoff");
    r.connect("2", 0);
    r.at(7).await;
    assert!(
        r.report().scaling.is_none(),
        "a connected block clears the failures"
    );
}

#[tokio::test]
async fn waiting_tasks_bring_blocks_one_at_a_time_and_idle_ones_go() {
    let mut r = rig("kind = \"slurm\"\nmax_blocks = 2\nidle_timeout = \"30s\"");
    r.at(0).await;
    assert_eq!(r.submitted(), 0, "init_blocks is 0 on a cluster");
    r.waiting(500);
    r.at(1).await;
    r.at(2).await;
    assert_eq!(r.submitted(), 1, "one block on its way at a time");
    r.connect("1", 32);
    r.at(3).await;
    assert_eq!(r.submitted(), 2);
    r.connect("2", 32);
    r.at(4).await;
    assert_eq!(r.submitted(), 2, "max_blocks");
    // The work is done: both idle; after 30 s both go (min_blocks 0).
    r.waiting(0);
    r.connect("1", 0);
    r.connect("2", 0);
    r.at(5).await;
    r.at(20).await;
    assert!(r.scheduler.cancelled.lock().unwrap().is_empty());
    r.at(36).await;
    assert_eq!(r.scheduler.cancelled.lock().unwrap().len(), 2);
    assert_eq!(r.scaler.alive(), 0);
}
