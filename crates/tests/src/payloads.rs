//! Task payloads and functions in the forms a test can write by hand.

/// A Python function in the `st` (source text) form, which a test can write by hand:
/// `pack(["st\n<name>:<source>"])`.
pub fn python_source(name: &str, source: &str) -> String {
    pack(&[&format!("st\n{name}:{source}")])
}

/// Arguments as JSON data (`11`), packed as `(args, kwargs)`.
pub fn json_args(args: &serde_json::Value) -> String {
    pack(&[&format!("11\n{args}"), "11\n{}"])
}

/// The packed-buffer form: each buffer behind its length in characters and a newline.
pub fn pack(buffers: &[&str]) -> String {
    buffers
        .iter()
        .map(|b| format!("{}\n{b}", b.chars().count()))
        .collect()
}
