//! Reading YAML documents the user wrote (the config file, drill scenarios, game-day plans):
//! errors located by file, line and dotted field, `${VAR}` substitution, and finding the line
//! of a field that serde reported without one. Every file format of the agent shares these,
//! so they live below the features that own the formats.

use std::path::PathBuf;

/// A configuration problem, located in its file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// What the file is, for the message: `config file`, `scenario file`,
        /// `game-day file`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Something in the file is wrong.
    #[error("{file}:{line}: {field}: {message}")]
    Invalid {
        /// The file (or `<embedded default>`).
        file: String,
        /// 1-based line, 0 when unknown.
        line: usize,
        /// Dotted field path, or `-` when the whole document is at fault.
        field: String,
        /// What is wrong and what to do.
        message: String,
    },
}

/// Whether `s` is a label a user gives in a file (`service:`, `tier:`): 1–64 of
/// `[A-Za-z0-9._-]`, so it is safe in metric attributes, report anchors and file names.
pub fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A serde_yaml error as a [`ConfigError`] at the offending value's own line and field.
pub fn yaml_error(e: &serde_yaml_ng::Error, text: &str, file: &str) -> ConfigError {
    let line = e.location().map(|l| l.line()).unwrap_or(0);
    let msg = e.to_string();
    // serde_yaml_ng prefixes the dotted path ("host.per_cpu: invalid type…") for nested
    // fields; for unknown fields the message names the key itself.
    let (mut field, message) = match msg.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => (path.to_owned(), rest.to_owned()),
        _ => ("-".to_owned(), msg.clone()),
    };
    if let Some(name) = msg
        .split('`')
        .nth(1)
        .filter(|_| msg.contains("unknown field"))
    {
        field = if field == "-" {
            name.to_owned()
        } else {
            format!("{field}.{name}")
        };
    }
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_owned();
    // Errors raised by a field's own type (a bad duration) carry the *parent's* path and
    // location; find the offending value's own line and key instead.
    if let Some(value) = message
        .strip_prefix("invalid duration \"")
        .or_else(|| message.strip_prefix("invalid size \""))
        .and_then(|m| m.split('"').next())
        && let Some((idx, key)) = find_value_line(text, value)
    {
        let field = if field == "-" {
            key
        } else {
            format!("{field}.{key}")
        };
        return ConfigError::Invalid {
            file: file.to_owned(),
            line: idx + 1,
            field,
            message,
        };
    }
    let line = if line == 0 {
        line_of(text, &field)
    } else {
        line
    };
    ConfigError::Invalid {
        file: file.to_owned(),
        line,
        field,
        message,
    }
}

/// The 0-based line and key of the first `key: value` line whose value is `value`.
fn find_value_line(text: &str, value: &str) -> Option<(usize, String)> {
    text.lines().enumerate().find_map(|(idx, line)| {
        let (key, rest) = line.split_once(':')?;
        let rest = rest[..comment_start(rest)]
            .trim()
            .trim_matches(|c| c == '"' || c == '\'');
        (rest == value).then(|| (idx, key.trim().trim_start_matches("- ").to_owned()))
    })
}

/// Replaces `${VAR}` and `${VAR:-default}`; `$$` is a literal `$`. A missing variable
/// without a default is an error naming the variable and line.
pub fn substitute_env(
    text: &str,
    file: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (idx, full_line) in text.split_inclusive('\n').enumerate() {
        // Comments are copied untouched: `${…}` in a comment is documentation, not a reference.
        let (line, comment) = full_line.split_at(comment_start(full_line));
        let mut rest = line;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(stripped) = after.strip_prefix('$') {
                out.push('$');
                rest = stripped;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    return Err(ConfigError::Invalid {
                        file: file.to_owned(),
                        line: idx + 1,
                        field: "-".into(),
                        message: "unterminated ${…}: write ${VAR} or ${VAR:-default}, or $$ for a literal $".into(),
                    });
                };
                let expr = &body[..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (expr, None),
                };
                match lookup(name).or_else(|| default.map(str::to_owned)) {
                    Some(v) => out.push_str(&v),
                    None => {
                        return Err(ConfigError::Invalid {
                            file: file.to_owned(),
                            line: idx + 1,
                            field: "-".into(),
                            message: format!(
                                "environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
                            ),
                        });
                    }
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    Ok(out)
}

/// Byte index where a YAML comment starts in `line` (a `#` at the start or after white space,
/// outside quotes), or the line's length.
fn comment_start(line: &str) -> usize {
    let (mut single, mut double) = (false, false);
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev_space => return i,
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line.len()
}

/// Finds the 1-based line of a dotted field path by following keys at growing indentation.
/// Returns 0 when not found (the field came from a default).
pub fn line_of(text: &str, dotted: &str) -> usize {
    let mut keys = dotted
        .split('.')
        .filter(|k| !k.is_empty() && *k != "-")
        .peekable();
    let mut min_indent = 0usize;
    let mut found = 0usize;
    let Some(mut want) = keys.next() else {
        return 0;
    };
    for (idx, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.starts_with('#') || indent < min_indent {
            continue;
        }
        let key = trimmed
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        if key == want
            && trimmed[key.len()..]
                .trim_start_matches('"')
                .trim_start()
                .starts_with(':')
        {
            found = idx + 1;
            min_indent = indent + 1;
            match keys.next() {
                Some(k) => want = k,
                None => return found,
            }
        }
    }
    found
}

/// The 1-based line of `field` (dotted, e.g. `restore.query`) inside item `index` of the
/// top-level list `key`; the item's first line when the field is not written; 0 when the
/// list is not found.
pub fn item_line(text: &str, key: &str, index: usize, field: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let Some(list_at) = lines
        .iter()
        .position(|l| l.trim_end() == format!("{key}:") || l.starts_with(&format!("{key}: ")))
    else {
        return 0;
    };
    let mut items: Vec<(usize, usize)> = Vec::new(); // (line index, indent of "- ")
    let mut item_indent = None;
    let mut end = lines.len();
    for (idx, l) in lines.iter().enumerate().skip(list_at + 1) {
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let indent = l.len() - t.len();
        if indent == 0 && !t.starts_with('-') {
            end = idx;
            break;
        }
        if t.starts_with("- ") || t == "-" {
            let want = *item_indent.get_or_insert(indent);
            if indent == want {
                items.push((idx, indent));
            }
        }
    }
    let Some(&(start, indent)) = items.get(index) else {
        return 0;
    };
    let stop = items.get(index + 1).map_or(end, |&(n, _)| n);
    // Follow the dotted keys at growing indentation inside the item.
    let mut min_indent = indent;
    let mut found = start;
    for part in field.split('.') {
        let hit = (found..stop).find(|&n| {
            let l = lines[n];
            let t = l.trim_start().trim_start_matches("- ");
            let ind = l.len() - t.len();
            ind >= min_indent
                && (t.starts_with(&format!("{part}:"))
                    || t.contains(&format!(" {part}:"))
                    || t.contains(&format!("{{{part}:")))
        });
        match hit {
            Some(n) => {
                found = n;
                min_indent = lines[n].len() - lines[n].trim_start().len() + 1;
            }
            None => return found + 1,
        }
    }
    found + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_line_follows_items_and_nested_keys() {
        let t = "interval: 1s\nbackups:\n  - name: a\n    rpo: 1h\n  # c\n  - name: b\n    restore:\n      query: x\n    rpo: 2h\nhost: {}\n";
        assert_eq!(item_line(t, "backups", 0, "rpo"), 4);
        assert_eq!(item_line(t, "backups", 1, "name"), 6);
        assert_eq!(item_line(t, "backups", 1, "restore.query"), 8);
        assert_eq!(item_line(t, "backups", 1, "rpo"), 9);
        assert_eq!(item_line(t, "backups", 1, "missing"), 6);
        assert_eq!(item_line(t, "backups", 5, "rpo"), 0);
        assert_eq!(item_line("", "backups", 0, "rpo"), 0);
    }
}
