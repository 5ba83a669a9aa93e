//! Where a key sits in a config file, so that an error can name its line.

/// The 1-based line of the dotted `key` (`provider.max_blocks`) in `text`, when the text
/// parses and holds it.
pub(super) fn of_key(text: &str, key: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let (k, item) = table.get_key_value(part)?;
        if parts.peek().is_none() {
            let at = k.span().or_else(|| item.span())?.start;
            return Some(text[..at].matches('\n').count() + 1);
        }
        table = item.as_table_like()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::of_key;

    #[test]
    fn keys_are_found_in_tables_dotted_keys_and_inline_tables() {
        let text = "url = \"x\"\n\n[provider]\nkind = \"slurm\"\nmax_blocks = 0\n";
        assert_eq!(of_key(text, "provider.max_blocks"), Some(5));
        assert_eq!(of_key(text, "url"), Some(1));
        assert_eq!(of_key("a = 1\nprovider.qos = \"x\"", "provider.qos"), Some(2));
        assert_eq!(of_key("provider = { kind = \"pbs\" }", "provider.kind"), Some(1));
        assert_eq!(of_key(text, "provider.partition"), None);
    }
}
