//! The files a scaler keeps in the endpoint directory: `blocks/<id>/` per batch block,
//! and `blocks.json`, the current report that `ferry-endpoint status` reads.

use std::path::{Path, PathBuf};

use ferry_proto::messages::ProviderReport;

/// The next block id: one past the highest directory in `blocks/`.
pub(super) fn next_block_id(blocks_dir: &Path) -> u64 {
    std::fs::read_dir(blocks_dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
                .max()
                .map_or(1, |n| n + 1)
        })
        .unwrap_or(1)
}

/// The first lines of a block's `job.out`, for errors.
pub(super) fn job_output_head(dir: &Path, block_id: &str) -> String {
    let path = dir.join("blocks").join(block_id).join("job.out");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let head: Vec<&str> = text.lines().take(10).collect();
    crate::provider::command::head(head.join(" | ").trim(), 1000)
}

pub(super) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// `blocks.json` in the endpoint directory.
pub fn report_path(dir: &Path) -> PathBuf {
    dir.join("blocks.json")
}

/// The report a (running) endpoint last wrote.
pub fn read_report(dir: &Path) -> Option<ProviderReport> {
    serde_json::from_slice(&std::fs::read(report_path(dir)).ok()?).ok()
}

pub(super) fn write_report(dir: &Path, report: &ProviderReport) {
    let path = report_path(dir);
    let tmp = path.with_extension("json.tmp");
    let written = serde_json::to_vec_pretty(report)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the blocks report");
    }
}
