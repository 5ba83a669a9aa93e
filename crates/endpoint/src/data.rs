//! The data plane, from the endpoint's side: inputs too large for a task message are
//! fetched from the web-service, and results too large for a report are stored there
//! first (the report then carries only their size). Both go over HTTP with the
//! endpoint's token.

use std::time::Duration;

use bytes::Bytes;
use ferry_proto::TaskId;
use ferry_proto::messages::{Completion, TaskResult, TaskSpec};

/// The web-service's data routes, and the limits it announced at registration.
#[derive(Clone)]
pub struct DataPlane {
    http: reqwest::Client,
    url: String,
    token: String,
    /// Results above this size go by reference.
    pub inline_limit: u64,
    /// Results above this size fail their task.
    pub max_result: u64,
}

impl DataPlane {
    pub fn new(http: reqwest::Client, url: &str, token: String, inline_limit: u64, max_result: u64) -> Self {
        Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
            token,
            inline_limit,
            max_result,
        }
    }

    /// Fills in the inputs of tasks that travel by reference; a task whose input cannot
    /// be had any more (it finished meanwhile) is dropped from the list.
    pub async fn fetch_inputs(&self, tasks: &mut Vec<TaskSpec>) -> anyhow::Result<()> {
        let mut keep = Vec::with_capacity(tasks.len());
        for mut task in tasks.drain(..) {
            if task.input_bytes.is_some() {
                match self.input(task.task_id).await? {
                    Some(data) => {
                        task.payload = data;
                        task.input_bytes = None;
                    }
                    None => {
                        tracing::info!(task_id = %task.task_id, "the task's input is gone (it finished); dropped");
                        continue;
                    }
                }
            }
            keep.push(task);
        }
        *tasks = keep;
        Ok(())
    }

    async fn input(&self, task: TaskId) -> anyhow::Result<Option<Bytes>> {
        let url = format!("{}/v1/tasks/{task}/input", self.url);
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot fetch the input of task {task} from {url}: {e}"))?;
        match response.status() {
            s if s.is_success() => Ok(Some(response.bytes().await?)),
            reqwest::StatusCode::GONE | reqwest::StatusCode::NOT_FOUND => Ok(None),
            s => anyhow::bail!("cannot fetch the input of task {task} from {url}: {s}"),
        }
    }

    /// About how many bytes a result will take in a report (after [`Self::prepare`]).
    pub fn carried_bytes(&self, result: &TaskResult) -> usize {
        let value = match &result.completion {
            Completion::Success { result } => result.len().min(self.inline_limit as usize),
            Completion::Failure { traceback, exception } => {
                traceback.len() + exception.as_ref().map_or(0, |e| e.len())
            }
            Completion::Lost { reason } | Completion::TimedOut { reason } => reason.len(),
            Completion::SuccessByReference { .. } => 0,
        };
        value + result.stdout.len() + result.stderr.len() + 64 * (result.steps.len() + 1)
    }

    /// Makes a result fit for a report: a large value is stored in the data plane and
    /// replaced by its size; one past the limit fails the task instead.
    pub async fn prepare(&self, result: &mut TaskResult) {
        let Completion::Success { result: data } = &result.completion else {
            return;
        };
        let len = data.len() as u64;
        if len <= self.inline_limit {
            return;
        }
        let task = result.task_id;
        result.completion = if len > self.max_result {
            Completion::Failure {
                // Named as Globus Compute names it, so its SDK's users recognise it.
                traceback: format!(
                    "MaxResultSizeExceeded({len}, {max}): the result of task {task} is {len} bytes; \
                     the limit is {max} bytes (FERRY_MAX_PAYLOAD_BYTES)",
                    max = self.max_result
                ),
                exception: None,
            }
        } else {
            match self.put_result(task, result.attempt, data.clone()).await {
                Ok(()) => Completion::SuccessByReference { bytes: len },
                Err(e) => {
                    tracing::warn!(task_id = %task, error = %format!("{e:#}"), "cannot store a large result");
                    Completion::Failure {
                        traceback: format!(
                            "the result of task {task} ({len} bytes) could not be stored: {e:#}"
                        ),
                        exception: None,
                    }
                }
            }
        };
    }

    async fn put_result(&self, task: TaskId, attempt: u32, data: Bytes) -> anyhow::Result<()> {
        let url = format!("{}/v1/tasks/{task}/results/{attempt}", self.url);
        let mut delay = Duration::from_millis(200);
        for left in (0..5).rev() {
            let sent = self
                .http
                .put(&url)
                .bearer_auth(&self.token)
                .body(data.clone())
                .timeout(Duration::from_secs(300))
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return Ok(()),
                // A refusal will not change on retry.
                Ok(r) if r.status().is_client_error() => {
                    anyhow::bail!("{url} refused the result: {}", r.text().await.unwrap_or_default())
                }
                Ok(r) if left == 0 => anyhow::bail!("{url} answered {}", r.status()),
                Err(e) if left == 0 => anyhow::bail!("cannot reach {url}: {e}"),
                _ => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        unreachable!("the last attempt returns")
    }
}
