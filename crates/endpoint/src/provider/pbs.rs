//! PBS Pro / OpenPBS: blocks are jobs submitted with `qsub`, watched with one
//! `qstat -f -F json -x` call (`-x` so finished jobs are still told of), cancelled with
//! `qdel`. The queue and account are directives in the script, so `qsub` needs no
//! flags.
//!
//! A finished job (`F`) is told apart by its `Exit_status`: 0 completed, -29 its
//! walltime passed (`JOB_EXEC_KILL_WALLTIME`), 256 + a signal number killed (as `qdel`
//! does), anything else failed.

use std::collections::HashMap;
use std::time::Duration;

use super::command::{Output, run, run_ok};
use super::{BlockJob, Error, JobId, JobState, JobStatus, Provider};

/// PBS's exit status for a job killed at its walltime.
const KILLED_AT_WALLTIME: i64 = -29;

/// The PBS provider.
#[derive(Debug, Clone)]
pub struct Pbs {
    /// How long a command may take.
    pub timeout: Duration,
}

impl Provider for Pbs {
    async fn submit(&self, block: &BlockJob) -> Result<JobId, Error> {
        let script = block.script.display().to_string();
        let out = run_ok("qsub", &[&script], Some(&block.dir), self.timeout).await?;
        parse_submitted(&out)
    }

    async fn status(&self, jobs: &[JobId]) -> Result<HashMap<JobId, JobStatus>, Error> {
        if jobs.is_empty() {
            return Ok(HashMap::new());
        }
        let mut args = vec!["-f", "-F", "json", "-x"];
        args.extend(jobs.iter().map(|j| j.0.as_str()));
        let out = run("qstat", &args, None, self.timeout).await?;
        // qstat exits non-zero when one of the jobs is unknown, and still prints the rest.
        if !out.success() && !unknown_only(&out) {
            return Err(out.failure());
        }
        parse_qstat(&out, jobs)
    }

    async fn cancel(&self, jobs: &[JobId]) -> Result<(), Error> {
        if jobs.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = jobs.iter().map(|j| j.0.as_str()).collect();
        let out = run("qdel", &ids, None, self.timeout).await?;
        let harmless = out.stderr.lines().all(|l| {
            l.trim().is_empty()
                || l.contains("Unknown Job Id")
                || l.contains("Job has finished")
                || l.contains("Request invalid for state of job")
        });
        if out.success() || harmless {
            Ok(())
        } else {
            Err(out.failure())
        }
    }
}

/// Every line on stderr says a job is unknown.
pub fn unknown_only(out: &Output) -> bool {
    let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    !lines.is_empty() && lines.iter().all(|l| l.contains("Unknown Job Id"))
}

/// qsub prints the job id (`1234.server`) as its last line.
pub fn parse_submitted(out: &Output) -> Result<JobId, Error> {
    let id = out
        .stdout
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .ok_or_else(|| Error::unreadable(out, "no job id"))?;
    let number = id.split('.').next().unwrap_or_default();
    let number = number.split('[').next().unwrap_or_default();
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) || id.contains(char::is_whitespace) {
        return Err(Error::unreadable(out, "the last line is not a job id"));
    }
    Ok(JobId(id.to_owned()))
}

/// The `Jobs` object of `qstat -f -F json`. A job is matched by its full id, or by its
/// number when the server's name is written differently (`12.pbs` and
/// `12.pbs.cluster.org`). Jobs asked for and absent are gone ([`JobState::Missing`]).
pub fn parse_qstat(out: &Output, asked: &[JobId]) -> Result<HashMap<JobId, JobStatus>, Error> {
    let mut states = HashMap::new();
    let text = out.stdout.trim();
    let jobs = if text.is_empty() {
        serde_json::Map::new()
    } else {
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::unreadable(out, format!("not JSON: {e}")))?;
        match doc.get("Jobs") {
            None => serde_json::Map::new(),
            Some(serde_json::Value::Object(jobs)) => jobs.clone(),
            Some(_) => return Err(Error::unreadable(out, "`Jobs` is not an object")),
        }
    };
    let number = |id: &str| id.split('.').next().unwrap_or(id).to_owned();
    for (id, job) in &jobs {
        let Some(wanted) = asked
            .iter()
            .find(|a| a.0 == *id)
            .or_else(|| asked.iter().find(|a| number(&a.0) == number(id)))
        else {
            continue;
        };
        let Some(letter) = job.get("job_state").and_then(|s| s.as_str()) else {
            return Err(Error::unreadable(out, format!("job {id} has no job_state")));
        };
        // A number, or (some PBS Pro releases) a string of one.
        let exit = job.get("Exit_status").and_then(|e| {
            e.as_i64()
                .or_else(|| e.as_str().and_then(|s| s.trim().parse().ok()))
        });
        let comment = job
            .get("comment")
            .and_then(|c| c.as_str())
            .map(|c| c.trim_start_matches("Not Running: ").to_owned());
        let walltime = |group: &str| {
            job.get(group)
                .and_then(|g| g.get("walltime"))
                .and_then(|w| w.as_str())
                .and_then(clock_secs)
        };
        let mut status = status_of(letter, exit, comment);
        // Before OpenPBS 22.05 a walltime kill looks like a qdel (271): tell them apart
        // by the time used.
        if status.state == JobState::Cancelled
            && let (Some(used), Some(limit)) = (walltime("resources_used"), walltime("Resource_List"))
            && used >= limit
        {
            status = JobStatus::new(JobState::TimedOut, letter, Some("walltime exceeded".to_owned()));
        }
        states.insert(wanted.clone(), status);
    }
    for job in asked {
        states
            .entry(job.clone())
            .or_insert_with(|| JobStatus::new(JobState::Missing, "", None));
    }
    Ok(states)
}

/// A job state letter, with the exit status and comment of a finished job.
pub fn status_of(letter: &str, exit: Option<i64>, comment: Option<String>) -> JobStatus {
    let state = match letter {
        "Q" | "W" | "T" => JobState::Pending,
        "H" | "S" | "U" => JobState::Held,
        "R" | "E" | "B" => JobState::Running,
        "F" | "X" => match exit {
            Some(0) => JobState::Completed,
            Some(KILLED_AT_WALLTIME) => JobState::TimedOut,
            Some(s) if s > 256 && matches!(s - 256, 9 | 15) => JobState::Cancelled,
            Some(_) => JobState::Failed,
            // Deleted before it ran.
            None => JobState::Cancelled,
        },
        _ => JobState::Unknown,
    };
    let reason = match (state, exit) {
        (JobState::Failed, Some(e)) => Some(format!("exit status {e}")),
        (JobState::TimedOut, _) => Some("walltime exceeded".to_owned()),
        (JobState::Pending | JobState::Held | JobState::Unknown, _) => comment,
        _ => None,
    };
    JobStatus::new(state, letter, reason)
}

/// `HH:MM:SS` (hours unbounded) in seconds.
fn clock_secs(text: &str) -> Option<u64> {
    let mut parts = text.trim().split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    (parts.next().is_none() && m < 60 && s < 60).then_some((h * 60 + m) * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(stdout: &str, stderr: &str, code: i32) -> Output {
        Output {
            command: "qstat ...".into(),
            code: Some(code),
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn qsub_prints_the_id_last() {
        assert_eq!(
            parse_submitted(&output("1234.pbs01\n", "", 0)).unwrap().0,
            "1234.pbs01"
        );
        assert!(parse_submitted(&output("qsub: job submitted\n", "", 0)).is_err());
    }

    #[test]
    fn finished_jobs_are_told_apart_by_exit_status() {
        assert_eq!(status_of("F", Some(0), None).state, JobState::Completed);
        assert_eq!(status_of("F", Some(-29), None).state, JobState::TimedOut);
        assert_eq!(status_of("F", Some(271), None).state, JobState::Cancelled);
        let failed = status_of("F", Some(1), None);
        assert_eq!(
            (failed.state, failed.reason.as_deref()),
            (JobState::Failed, Some("exit status 1"))
        );
    }

    #[test]
    fn a_queued_job_says_why_it_waits() {
        let json = r#"{"Jobs":{"7.srv":{"job_state":"Q","comment":"Not Running: Insufficient amount of resource: ncpus"}}}"#;
        let states = parse_qstat(
            &output(json, "", 0),
            &[JobId("7.srv".into()), JobId("8.srv".into())],
        )
        .unwrap();
        let q = &states[&JobId("7.srv".into())];
        assert_eq!(q.state, JobState::Pending);
        assert_eq!(
            q.reason.as_deref(),
            Some("Insufficient amount of resource: ncpus")
        );
        assert_eq!(states[&JobId("8.srv".into())].state, JobState::Missing);
    }

    #[test]
    fn jobs_match_by_number_when_the_server_name_differs() {
        let json = r#"{"Jobs":{"7.srv.cluster.org":{"job_state":"R"}}}"#;
        let states = parse_qstat(&output(json, "", 0), &[JobId("7.srv".into())]).unwrap();
        assert_eq!(states[&JobId("7.srv".into())].state, JobState::Running);
    }

    #[test]
    fn unknown_ids_on_stderr_are_not_a_failure() {
        let out = output("{}", "qstat: Unknown Job Id 9.srv\n", 153);
        assert!(unknown_only(&out));
        assert!(!unknown_only(&output("", "qstat: cannot connect to server\n", 1)));
    }

    #[test]
    fn garbage_is_an_error_naming_the_command() {
        let err = parse_qstat(&output("Job id  Name\n", "", 0), &[JobId("1".into())]).unwrap_err();
        assert!(err.to_string().contains("not JSON"), "{err}");
    }
}
