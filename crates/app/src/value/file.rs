//! The check of a file input's value: where the file comes from and the name it is
//! staged under, which must stay one path component of the run directory.

use serde_json::{Map, Value as Json};

use super::{FileInput, FileMode, FileSource, Problem, describe, excerpt, expected};

/// The longest file name an endpoint's file system takes (`NAME_MAX`), in bytes.
const MAX_FILE_NAME_BYTES: usize = 255;

/// A file input: a path string (copied), `{"path", "mode"?, "name"?}` or
/// `{"data", "name"}` (the file's content in base64, which travels with the task's
/// inputs: inline, or through the data plane when the inputs are large).
pub(super) fn check(given: &Json) -> Result<FileInput, Problem> {
    match given {
        Json::String(path) => path_file(path, FileMode::Copy, None),
        Json::Object(object) => object_file(object),
        other => Err(expected(
            r#"a file (an absolute path, {"path", "mode"} or {"data", "name"})"#,
            other,
        )),
    }
}

fn object_file(object: &Map<String, Json>) -> Result<FileInput, Problem> {
    if let Some(key) = object
        .keys()
        .find(|k| !matches!(k.as_str(), "path" | "mode" | "name" | "data"))
    {
        return Err(Problem::File(format!(
            "a file object has no key {} (keys: path, mode, name, data)",
            excerpt(key)
        )));
    }
    let text = |key: &str| match object.get(key) {
        None => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(Problem::File(format!(
            "{key} must be a string, got {}",
            describe(other)
        ))),
    };
    let (path, data, mode, name) = (text("path")?, text("data")?, text("mode")?, text("name")?);
    match (path, data) {
        (Some(_), Some(_)) => Err(Problem::File(
            "a file object gives either path or data, not both".into(),
        )),
        (None, None) => Err(Problem::File(
            "a file object needs path (a file on the endpoint) or data (an upload)".into(),
        )),
        (Some(path), None) => {
            let mode = match mode {
                None | Some("copy") => FileMode::Copy,
                Some("link") => FileMode::Link,
                Some(other) => {
                    return Err(Problem::File(format!(
                        r#"mode must be "copy" or "link", got {}"#,
                        excerpt(other)
                    )));
                }
            };
            path_file(path, mode, name)
        }
        (None, Some(data)) => {
            if mode.is_some() {
                return Err(Problem::File(
                    "mode applies only to a path: an upload is always copied".into(),
                ));
            }
            let name =
                name.ok_or_else(|| Problem::File("an upload needs a name to be staged under".into()))?;
            file_name_problem(name).map_or(Ok(()), Err)?;
            if let Err(e) = decode_upload(data) {
                return Err(Problem::File(format!(
                    "data must be the file's content in base64: {e}"
                )));
            }
            Ok(FileInput {
                source: FileSource::Upload(data.to_owned()),
                mode: FileMode::Copy,
                name: name.to_owned(),
            })
        }
    }
}

/// The content of an uploaded file: `data` is base64 (the standard alphabet, padded),
/// as Python's `base64.b64encode` writes it.
pub fn decode_upload(data: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(data)
}

fn path_file(path: &str, mode: FileMode, name: Option<&str>) -> Result<FileInput, Problem> {
    if path.contains('\0') {
        return Err(Problem::Nul);
    }
    if !path.starts_with('/') {
        return Err(Problem::File(format!(
            "the path must be absolute, got {}",
            excerpt(path)
        )));
    }
    let name = match name {
        Some(name) => name,
        None => {
            let base = path.trim_end_matches('/').rsplit('/').next().unwrap_or_default();
            if base.is_empty() || base == "." || base == ".." {
                return Err(Problem::File(format!("the path {} names no file", excerpt(path))));
            }
            base
        }
    };
    file_name_problem(name).map_or(Ok(()), Err)?;
    Ok(FileInput {
        source: FileSource::Path(path.to_owned()),
        mode,
        name: name.to_owned(),
    })
}

/// Why `name` cannot be a file's name in the run directory, if it cannot.
/// Names the endpoint writes in a run directory itself: a file staged under one would
/// be overwritten (or overwrite the scripts).
fn is_reserved(name: &str) -> bool {
    if name == ".ferry" {
        return true;
    }
    let Some((phase, stream)) = name.rsplit_once('.') else {
        return false;
    };
    matches!(phase, "prolog" | "execute" | "epilog") && matches!(stream, "stdout" | "stderr")
}

fn file_name_problem(name: &str) -> Option<Problem> {
    let why = if name.is_empty() {
        "is empty"
    } else if name == "." || name == ".." {
        "is not a file name"
    } else if name.contains('/') {
        "must be one path component (no /)"
    } else if name.contains('\0') {
        "contains a NUL byte"
    } else if name.len() > MAX_FILE_NAME_BYTES {
        "is longer than 255 bytes"
    } else if is_reserved(name) {
        "is the endpoint's own in the run directory (.ferry, <phase>.stdout, <phase>.stderr)"
    } else {
        return None;
    };
    Some(Problem::File(format!("the file name {} {why}", excerpt(name))))
}
