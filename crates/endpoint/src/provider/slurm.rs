//! Slurm: blocks are jobs submitted with `sbatch --parsable`, watched with one
//! `squeue -h -t all` call for all of them (finished jobs included while the controller
//! remembers them, `MinJobAge`), cancelled with `scancel`.
//!
//! Every state Slurm documents is mapped (see [`state_of`]); a job the controller has
//! forgotten is [`JobState::Missing`]: it ended, and whether its managers ever connected
//! tells the endpoint if it ended well.

use std::collections::HashMap;
use std::time::Duration;

use super::command::{Output, run, run_ok};
use super::{BlockJob, Error, JobId, JobState, JobStatus, Provider};

/// The Slurm provider.
#[derive(Debug, Clone)]
pub struct Slurm {
    /// How long a command may take.
    pub timeout: Duration,
}

impl Provider for Slurm {
    async fn submit(&self, block: &BlockJob) -> Result<JobId, Error> {
        let script = block.script.display().to_string();
        let out = run_ok("sbatch", &["--parsable", &script], Some(&block.dir), self.timeout).await?;
        parse_submitted(&out)
    }

    async fn status(&self, jobs: &[JobId]) -> Result<HashMap<JobId, JobStatus>, Error> {
        if jobs.is_empty() {
            return Ok(HashMap::new());
        }
        let list = jobs.iter().map(|j| j.0.as_str()).collect::<Vec<_>>().join(",");
        let out = squeue(&list, self.timeout).await?;
        if out.success() {
            return parse_squeue(&out, jobs);
        }
        if !forgotten(&out) {
            return Err(out.failure());
        }
        // squeue refuses the whole list when it holds a job it has forgotten: ask one
        // by one, and a job refused alone is gone.
        let mut states = HashMap::new();
        for job in jobs {
            let out = squeue(&job.0, self.timeout).await?;
            if out.success() {
                states.extend(parse_squeue(&out, std::slice::from_ref(job))?);
            } else if forgotten(&out) {
                states.insert(job.clone(), JobStatus::new(JobState::Missing, "", None));
            } else {
                return Err(out.failure());
            }
        }
        Ok(states)
    }

    async fn cancel(&self, jobs: &[JobId]) -> Result<(), Error> {
        if jobs.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = jobs.iter().map(|j| j.0.as_str()).collect();
        let out = run("scancel", &ids, None, self.timeout).await?;
        // A job that ended already (or that the controller forgot) needs no cancel.
        let harmless = out.stderr.lines().all(|l| {
            l.trim().is_empty()
                || l.contains("already completing or completed")
                || l.contains("Invalid job id")
        });
        if out.success() || harmless {
            Ok(())
        } else {
            Err(out.failure())
        }
    }
}

async fn squeue(jobs: &str, timeout: Duration) -> Result<Output, Error> {
    run(
        "squeue",
        &["-h", "-t", "all", "-o", "%i|%T|%r", "-j", jobs],
        None,
        timeout,
    )
    .await
}

/// squeue's answer for a job id the controller no longer knows.
pub fn forgotten(out: &Output) -> bool {
    out.stderr.contains("Invalid job id")
}

/// `sbatch --parsable` prints `ID` or `ID;cluster`.
pub fn parse_submitted(out: &Output) -> Result<JobId, Error> {
    let line = out
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or_else(|| Error::unreadable(out, "no job id"))?;
    let id = line.split(';').next().unwrap_or_default();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::unreadable(out, "the job id is not a number"));
    }
    Ok(JobId(id.to_owned()))
}

/// Lines of `%i|%T|%r`: the job id, its state's long name, the reason. Jobs asked for
/// and not in the answer are gone ([`JobState::Missing`]): `-t all` lists every job the
/// controller still knows, finished ones included.
pub fn parse_squeue(out: &Output, asked: &[JobId]) -> Result<HashMap<JobId, JobStatus>, Error> {
    let mut states = HashMap::new();
    for line in out.stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut fields = line.splitn(3, '|');
        let (Some(id), Some(state), Some(reason)) = (fields.next(), fields.next(), fields.next()) else {
            return Err(Error::unreadable(
                out,
                format!("{line:?} is not `id|state|reason`"),
            ));
        };
        if id.is_empty() || state.is_empty() {
            return Err(Error::unreadable(
                out,
                format!("{line:?} lacks a job id or a state"),
            ));
        }
        let reason = match reason.trim() {
            "None" | "" => None,
            r => Some(r.trim_matches(['(', ')']).to_owned()),
        };
        let job = JobId(id.to_owned());
        if asked.contains(&job) {
            states.insert(job, JobStatus::new(state_of(state), state, reason));
        }
    }
    for job in asked {
        states
            .entry(job.clone())
            .or_insert_with(|| JobStatus::new(JobState::Missing, "", None));
    }
    Ok(states)
}

/// Every job state Slurm documents (squeue's long names), mapped.
pub fn state_of(native: &str) -> JobState {
    match native {
        "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_FED" | "POWER_UP_NODE" => JobState::Pending,
        "REQUEUE_HOLD" | "RESV_DEL_HOLD" | "SUSPENDED" | "STOPPED" => JobState::Held,
        "RUNNING" | "COMPLETING" | "RESIZING" | "SIGNALING" | "STAGE_OUT" | "UPDATE_DB" => JobState::Running,
        "COMPLETED" => JobState::Completed,
        "CANCELLED" => JobState::Cancelled,
        "TIMEOUT" | "DEADLINE" => JobState::TimedOut,
        "PREEMPTED" => JobState::Preempted,
        "FAILED" | "NODE_FAIL" | "BOOT_FAIL" | "OUT_OF_MEMORY" | "SPECIAL_EXIT" | "REVOKED"
        | "RECONFIG_FAIL" => JobState::Failed,
        _ => JobState::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(stdout: &str, stderr: &str, code: i32) -> Output {
        Output {
            command: "squeue ...".into(),
            code: Some(code),
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    fn ids(list: &[&str]) -> Vec<JobId> {
        list.iter().map(|s| JobId((*s).into())).collect()
    }

    #[test]
    fn sbatch_parsable_gives_the_id_with_or_without_a_cluster() {
        assert_eq!(parse_submitted(&output("42\n", "", 0)).unwrap().0, "42");
        assert_eq!(parse_submitted(&output("42;cluster1\n", "", 0)).unwrap().0, "42");
        let err = parse_submitted(&output("Submitted batch job 42\n", "", 0)).unwrap_err();
        assert!(err.to_string().contains("not a number"), "{err}");
    }

    #[test]
    fn squeue_lines_give_states_and_reasons() {
        let out = output(
            "10|RUNNING|None\n11|PENDING|Resources\n12|TIMEOUT|TimeLimit\n",
            "",
            0,
        );
        let states = parse_squeue(&out, &ids(&["10", "11", "12", "13"])).unwrap();
        assert_eq!(states[&JobId("10".into())].state, JobState::Running);
        assert_eq!(states[&JobId("10".into())].reason, None);
        assert_eq!(states[&JobId("11".into())].reason.as_deref(), Some("Resources"));
        assert_eq!(states[&JobId("12".into())].state, JobState::TimedOut);
        assert_eq!(states[&JobId("13".into())].state, JobState::Missing);
    }

    #[test]
    fn a_garbled_line_is_an_error_naming_it() {
        let err = parse_squeue(&output("10 RUNNING\n", "", 0), &ids(&["10"])).unwrap_err();
        assert!(err.to_string().contains("10 RUNNING"), "{err}");
    }

    #[test]
    fn every_documented_state_is_mapped() {
        for s in [
            "BOOT_FAIL",
            "CANCELLED",
            "COMPLETED",
            "CONFIGURING",
            "COMPLETING",
            "DEADLINE",
            "FAILED",
            "NODE_FAIL",
            "OUT_OF_MEMORY",
            "PENDING",
            "PREEMPTED",
            "RUNNING",
            "RESV_DEL_HOLD",
            "REQUEUE_FED",
            "REQUEUE_HOLD",
            "REQUEUED",
            "RESIZING",
            "REVOKED",
            "SIGNALING",
            "SPECIAL_EXIT",
            "STAGE_OUT",
            "STOPPED",
            "SUSPENDED",
            "TIMEOUT",
        ] {
            assert_ne!(state_of(s), JobState::Unknown, "{s}");
        }
        assert_eq!(state_of("SOMETHING_NEW"), JobState::Unknown);
    }
}
