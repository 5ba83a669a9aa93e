//! What this manager's node has, which tasks' requirements are checked against: cores,
//! memory, GPUs, tags.

/// Bytes of memory this manager's tasks may use: the smallest of the node's memory
/// (`MemTotal`), its cgroup's limit (cgroup v2 `memory.max`) and the scheduler's
/// allocation (`SLURM_MEM_PER_NODE`, in MiB); 0 when none can be read.
pub fn memory_bytes() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|m| m.trim().parse::<u64>().ok());
    let slurm = std::env::var("SLURM_MEM_PER_NODE")
        .ok()
        .and_then(|m| m.trim().parse::<u64>().ok())
        .map(|mib| mib * 1024 * 1024);
    [total, cgroup, slurm].into_iter().flatten().min().unwrap_or(0)
}

/// GPUs this manager's tasks may use: `configured` (`FERRY_NODE_GPUS`), else the
/// devices `CUDA_VISIBLE_DEVICES` lists, else the NVIDIA devices in `/dev`.
pub fn gpus(configured: Option<u32>) -> u32 {
    if let Some(n) = configured {
        return n;
    }
    if let Ok(visible) = std::env::var("CUDA_VISIBLE_DEVICES") {
        let visible = visible.trim();
        if visible.is_empty() || visible == "NoDevFiles" || visible == "-1" {
            return 0;
        }
        return visible.split(',').filter(|d| !d.trim().is_empty()).count() as u32;
    }
    std::fs::read_dir("/dev").map_or(0, |dir| {
        dir.flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.strip_prefix("nvidia")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .count() as u32
    })
}

/// The node's tags (sorted, each once).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags(pub Vec<String>);

/// The node's tags from `FERRY_NODE_TAGS` (commas or spaces between them); a word
/// that is no tag is an error naming it.
pub fn parse_tags(text: &str) -> Result<Tags, String> {
    let mut tags = Vec::new();
    for tag in text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
    {
        if !ferry_proto::messages::is_tag(tag) {
            return Err(format!(
                "{tag:?} is not a tag (1 to 64 letters, digits, `_`, `-`, `.`)"
            ));
        }
        tags.push(tag.to_owned());
    }
    tags.sort();
    tags.dedup();
    Ok(Tags(tags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_split_on_commas_or_spaces_and_a_bad_one_is_named() {
        assert_eq!(
            parse_tags("avx512, gpu  big").unwrap().0,
            ["avx512", "big", "gpu"]
        );
        assert_eq!(parse_tags("").unwrap(), Tags::default());
        let err = parse_tags("ok,no/slash").unwrap_err();
        assert!(err.contains("\"no/slash\""), "{err}");
    }

    #[test]
    fn this_node_has_some_memory_and_configured_gpus_win() {
        assert!(memory_bytes() > 0);
        assert_eq!(gpus(Some(3)), 3);
    }
}
