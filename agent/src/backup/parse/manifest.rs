//! Checksum manifests in the format `sha256sum` writes (`<64 hex>  <path>`, or
//! `<64 hex> *<path>` in binary mode), the format most backup jobs can produce with one line
//! of shell. Blank lines and `#` comments are skipped.

use super::ParseError;

/// One manifest entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Lower-case hex SHA-256.
    pub sha256: String,
    /// The path as written (absolute paths name the original location).
    pub path: String,
}

/// Parses a `sha256sum`-style manifest.
pub fn parse(text: &str) -> Result<Vec<Entry>, ParseError> {
    let mut out = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        let l = line.trim_end_matches('\r');
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            continue;
        }
        let bad = || ParseError::Invalid {
            what: "checksum manifest",
            reason: format!(
                "line {}: expected `<sha256 hex>  <path>` as sha256sum writes it, got {l:?}",
                idx + 1
            ),
        };
        let (hash, rest) = l.split_once(' ').ok_or_else(bad)?;
        if hash.len() != 64 || !hash.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let path = rest
            .strip_prefix(' ')
            .or_else(|| rest.strip_prefix('*'))
            .ok_or_else(bad)?;
        if path.is_empty() {
            return Err(bad());
        }
        out.push(Entry {
            sha256: hash.to_ascii_lowercase(),
            path: path.to_owned(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256sum_text_and_binary_modes() {
        let h = "a".repeat(64);
        let m = parse(&format!(
            "# made by the backup job\n{h}  /srv/a b.txt\n\n{} *rel/c\n",
            "B".repeat(64)
        ))
        .unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].path, "/srv/a b.txt");
        assert_eq!(m[1].sha256, "b".repeat(64));
        assert_eq!(m[1].path, "rel/c");
    }

    #[test]
    fn malformed_lines_are_named() {
        let e = parse("abc  x\n").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        assert!(parse(&format!("{}\n", "a".repeat(64))).is_err());
        assert!(parse(&format!("{} x\n", "a".repeat(64))).is_err());
    }
}
