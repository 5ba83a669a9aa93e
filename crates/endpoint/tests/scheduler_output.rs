//! The providers' parsers against what real schedulers print: Slurm output captured
//! from a real Slurm 22.05 (`tests/data/slurm/`), PBS output assembled from the OpenPBS
//! sources and public reports of real output (`tests/data/pbs/`; each README says how
//! every sample was made).

use std::path::PathBuf;

use ferry_endpoint::provider::command::Output;
use ferry_endpoint::provider::{JobId, JobState, pbs, slurm};

fn data(path: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn output(command: &str, code: i32, stdout: &str, stderr: &str) -> Output {
    Output {
        command: command.to_owned(),
        code: Some(code),
        stdout: stdout.to_owned(),
        stderr: stderr.to_owned(),
    }
}

fn ids(list: &[&str]) -> Vec<JobId> {
    list.iter().map(|s| JobId((*s).to_owned())).collect()
}

#[test]
fn slurm_sbatch_parsable_gives_the_job_id() {
    let out = output("sbatch --parsable", 0, &data("slurm/sbatch-parsable.stdout"), "");
    assert_eq!(slurm::parse_submitted(&out).unwrap(), JobId("4".into()));
}

#[test]
fn slurm_a_refused_submission_says_what_slurm_said() {
    let out = output(
        "sbatch --parsable submit.sh",
        1,
        &data("slurm/sbatch-bad-partition.stdout"),
        &data("slurm/sbatch-bad-partition.stderr"),
    );
    let err = out.failure().to_string();
    assert!(
        err.starts_with("`sbatch --parsable submit.sh` failed (exit status 1)"),
        "{err}"
    );
    assert!(err.contains("Invalid partition name specified"), "{err}");
}

#[test]
fn slurm_squeue_gives_running_and_pending_jobs_with_their_reasons() {
    let out = output("squeue", 0, &data("slurm/squeue-running-pending.stdout"), "");
    let states = slurm::parse_squeue(&out, &ids(&["2", "6", "11", "12"])).unwrap();
    let get = |id: &str| states[&JobId(id.into())].clone();
    assert_eq!(get("2").state, JobState::Running);
    assert_eq!(get("2").reason, None);
    assert_eq!(
        (get("11").state, get("11").reason.as_deref()),
        (JobState::Pending, Some("Resources"))
    );
    assert_eq!(get("6").reason.as_deref(), Some("PartitionConfig"));
    assert_eq!(get("12").reason.as_deref(), Some("Priority"));
}

#[test]
fn slurm_a_completing_job_still_runs_and_a_held_one_waits() {
    let out = output("squeue", 0, &data("slurm/squeue-completing.stdout"), "");
    let states = slurm::parse_squeue(&out, &ids(&["11"])).unwrap();
    assert_eq!(states[&JobId("11".into())].state, JobState::Running);
    let out = output("squeue", 0, &data("slurm/squeue-held.stdout"), "");
    let held = &slurm::parse_squeue(&out, &ids(&["14"])).unwrap()[&JobId("14".into())];
    assert_eq!(
        (held.state, held.reason.as_deref()),
        (JobState::Pending, Some("JobHeldUser"))
    );
}

#[test]
fn slurm_a_job_the_controller_forgot_is_missing() {
    let out = output("squeue", 0, &data("slurm/squeue-running-and-unknown.stdout"), "");
    let states = slurm::parse_squeue(&out, &ids(&["2", "999999"])).unwrap();
    assert_eq!(states[&JobId("999999".into())].state, JobState::Missing);
    let alone = output("squeue", 1, "", &data("slurm/squeue-unknown.stderr"));
    assert!(slurm::forgotten(&alone));
}

#[test]
fn pbs_qsub_gives_the_job_id() {
    let out = output("qsub submit.sh", 0, &data("pbs/qsub_ok.stdout"), "");
    assert_eq!(
        pbs::parse_submitted(&out).unwrap(),
        JobId("1234.pbs-server".into())
    );
}

#[test]
fn pbs_a_refused_submission_says_what_pbs_said() {
    let out = output("qsub submit.sh", 170, "", &data("pbs/qsub_unknown_queue.stderr"));
    let err = out.failure().to_string();
    assert_eq!(
        err,
        "`qsub submit.sh` failed (exit status 170): qsub: Unknown queue"
    );
}

#[test]
fn pbs_qstat_json_gives_every_state() {
    let out = output("qstat", 0, &data("pbs/qstat_f_json_x_multi.json"), "");
    let all: Vec<String> = (1234..=1242).map(|n| format!("{n}.pbs-server")).collect();
    let asked: Vec<JobId> = all.iter().map(|s| JobId(s.clone())).collect();
    let states = pbs::parse_qstat(&out, &asked).unwrap();
    let state = |n: u32| states[&JobId(format!("{n}.pbs-server"))].clone();
    assert_eq!(state(1234).state, JobState::Running);
    assert_eq!(
        state(1234).reason,
        None,
        "a running job's comment is not a reason"
    );
    assert_eq!(state(1235).state, JobState::Pending);
    assert!(
        state(1235)
            .reason
            .unwrap()
            .starts_with("Insufficient amount of resource: ncpus")
    );
    assert_eq!(state(1236).state, JobState::Held);
    assert_eq!(state(1237).state, JobState::Running, "exiting");
    assert_eq!(state(1238).state, JobState::Completed);
    assert_eq!(
        (state(1239).state, state(1239).reason.as_deref()),
        (JobState::Failed, Some("exit status 1"))
    );
    assert_eq!(state(1240).state, JobState::TimedOut);
    assert_eq!(state(1241).state, JobState::Cancelled);
    assert_eq!(state(1242).state, JobState::Cancelled, "deleted before it ran");
}

#[test]
fn pbs_an_exit_status_written_as_a_string_still_reads() {
    let out = output(
        "qstat",
        0,
        &data("pbs/qstat_f_json_x_exit_status_string.json"),
        "",
    );
    let states = pbs::parse_qstat(&out, &ids(&["1240.pbs-server"])).unwrap();
    assert_eq!(states[&JobId("1240.pbs-server".into())].state, JobState::TimedOut);
}

#[test]
fn pbs_unknown_ids_are_missing_and_the_rest_still_read() {
    let out = output(
        "qstat",
        153,
        &data("pbs/qstat_f_json_x_mixed_unknown.json"),
        &data("pbs/qstat_f_json_x_mixed_unknown.stderr"),
    );
    assert!(pbs::unknown_only(&out));
    let states = pbs::parse_qstat(&out, &ids(&["1234.pbs-server", "99.pbs-server"])).unwrap();
    assert_eq!(states[&JobId("1234.pbs-server".into())].state, JobState::Running);
    assert_eq!(states[&JobId("99.pbs-server".into())].state, JobState::Missing);
    let none = output("qstat", 153, &data("pbs/qstat_f_json_x_all_unknown.json"), "");
    let states = pbs::parse_qstat(&none, &ids(&["7.pbs-server"])).unwrap();
    assert_eq!(states[&JobId("7.pbs-server".into())].state, JobState::Missing);
}

#[test]
fn pbs_a_server_that_cannot_be_reached_is_an_error() {
    let out = output(
        "qstat",
        255,
        &data("pbs/qstat_connection_refused.json"),
        &data("pbs/qstat_connection_refused.stderr"),
    );
    assert!(!pbs::unknown_only(&out));
    assert!(
        out.failure().to_string().contains("cannot connect to server"),
        "{}",
        out.failure()
    );
}
