//! `logs NAME [-n LINES] [--follow]`: the end of a detached endpoint's `endpoint.log`,
//! and with `--follow` what it writes next, as `tail -f` (until Ctrl-C ends the
//! command; the endpoint runs on).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use super::{load, log_path};

/// How often `--follow` looks for more.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Prints the last `lines` lines of the endpoint's log; with `follow`, then what is
/// appended, for as long as the command runs. A log truncated or replaced meanwhile
/// (deleted and a new start writing another) is read again from its start.
pub fn logs(name: &str, lines: usize, follow: bool) -> anyhow::Result<()> {
    let (dir, _) = load(name)?;
    let path = log_path(&dir);
    let mut file = std::fs::File::open(&path).map_err(|e| {
        anyhow::anyhow!(
            "no log at {} ({e}): a detached `ferry-endpoint start {name}` writes it; with --foreground the endpoint logs to its stderr",
            path.display()
        )
    })?;
    let (tail, mut offset) = last_lines(&mut file, lines)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&tail)?;
    out.flush()?;
    if !follow {
        return Ok(());
    }
    let mut identity = file_identity(&path);
    loop {
        std::thread::sleep(FOLLOW_POLL);
        let now = file_identity(&path);
        if now.is_some() && now != identity {
            // Replaced: follow the new file from its start.
            if let Ok(f) = std::fs::File::open(&path) {
                (file, offset, identity) = (f, 0, now);
            }
        }
        let len = file.metadata()?.len();
        if len < offset {
            offset = 0; // truncated
        }
        if len > offset {
            file.seek(SeekFrom::Start(offset))?;
            let mut more = Vec::new();
            (&mut file).take(len - offset).read_to_end(&mut more)?;
            offset += more.len() as u64;
            out.write_all(&more)?;
            out.flush()?;
        }
    }
}

/// The file's device and inode, to notice a new file under the same name.
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The last `n` lines of `file` (all of it when shorter) and the offset of its end.
/// Read backwards a block at a time, so a long log costs what the lines cost.
fn last_lines(file: &mut std::fs::File, n: usize) -> std::io::Result<(Vec<u8>, u64)> {
    const BLOCK: u64 = 64 * 1024;
    let end = file.seek(SeekFrom::End(0))?;
    let mut start = end;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // A last line without its newline counts as a line too.
        let newlines = buf.iter().filter(|&&b| b == b'\n').count();
        let ends_open = buf.last().is_some_and(|&b| b != b'\n');
        if start == 0 || newlines > n || (newlines == n && ends_open) {
            break;
        }
        let from = start.saturating_sub(BLOCK);
        let mut block = vec![0; (start - from) as usize];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut block)?;
        block.extend_from_slice(&buf);
        (buf, start) = (block, from);
    }
    Ok((tail_of(&buf, n).to_vec(), end))
}

/// The last `n` lines of `text`.
fn tail_of(text: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &[];
    }
    // Skip the final newline, then find the n-th newline from the end.
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut seen = 0;
    for (i, &b) in body.iter().enumerate().rev() {
        if b == b'\n' {
            seen += 1;
            if seen == n {
                return &text[i + 1..];
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_is_the_last_lines_with_or_without_a_final_newline() {
        assert_eq!(tail_of(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail_of(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(tail_of(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail_of(b"a\nb\n", 0), b"");
        assert_eq!(tail_of(b"", 3), b"");
    }

    #[test]
    fn a_long_log_is_read_from_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("endpoint.log");
        let text: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let mut file = std::fs::File::open(&path).unwrap();

        let (tail, end) = last_lines(&mut file, 3).unwrap();

        assert_eq!(tail, b"line 49997\nline 49998\nline 49999\n");
        assert_eq!(end, text.len() as u64);
    }
}
