//! Task tags: free labels operators group tasks by, and the only task
//! attribute that reaches CloudWatch as a dimension (`Tag`), so metric
//! cardinality follows the tags in use, not the number of tasks.
//!
//! The rules mirror the `tasks_tags_valid` CHECK (migration 000006).

use super::InvalidField;

/// Most tags one task carries.
pub const MAX_TAGS: usize = 10;
/// Longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 64;

/// Characters a tag may hold besides ASCII letters and digits.
const TAG_PUNCTUATION: &[char] = &['_', '.', ':', '/', '=', '-'];

/// Whether `c` may appear in a tag.
fn tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || TAG_PUNCTUATION.contains(&c)
}

/// One tag: 1 to [`MAX_TAG_CHARS`] characters of ASCII letters, digits
/// and `_ . : / = -` (no whitespace, so what is given is what is stored).
/// `field` names it in the error.
pub fn validate_tag(field: &'static str, raw: &str) -> Result<String, InvalidField> {
    let tag = raw;
    if tag.is_empty() || tag.chars().count() > MAX_TAG_CHARS {
        return Err(InvalidField::new(
            field,
            format!("a tag must be 1 to {MAX_TAG_CHARS} characters"),
        ));
    }
    if let Some(bad) = tag.chars().find(|c| !tag_char(*c)) {
        let shown = if bad.is_control() {
            "a control character".to_string()
        } else {
            format!("`{bad}`")
        };
        return Err(InvalidField::new(
            field,
            format!("a tag may hold letters, digits and _ . : / = - only, not {shown}"),
        ));
    }
    Ok(tag.to_string())
}

/// A task's tags as given: at most [`MAX_TAGS`], each checked;
/// duplicates are dropped, the order kept.
pub fn validate_tags(raw: &[String]) -> Result<Vec<String>, InvalidField> {
    if raw.len() > MAX_TAGS {
        return Err(InvalidField::new(
            "tags",
            format!("at most {MAX_TAGS} tags per task, not {}", raw.len()),
        ));
    }
    let mut tags: Vec<String> = Vec::with_capacity(raw.len());
    for given in raw {
        let tag = validate_tag("tags", given)?;
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(raw: &[&str]) -> Result<Vec<String>, InvalidField> {
        validate_tags(&raw.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn good_tags_are_kept_in_order_without_duplicates() {
        assert_eq!(
            tags(&["team:payments", "billing", "team:payments", "env=prod"]).unwrap(),
            vec!["team:payments", "billing", "env=prod"]
        );
        assert_eq!(tags(&[]).unwrap(), Vec::<String>::new());
        let longest = "a".repeat(MAX_TAG_CHARS);
        assert_eq!(tags(&[&longest]).unwrap(), vec![longest]);
    }

    #[test]
    fn bad_tags_name_the_field_and_say_why() {
        for (raw, why) in [
            ("", "1 to 64"),
            (" padded", "` `"),
            (&"a".repeat(MAX_TAG_CHARS + 1) as &str, "1 to 64"),
            ("with space", "` `"),
            ("comma,tag", "`,`"),
            ("bell\u{7}", "control character"),
            ("émoji", "`é`"),
        ] {
            let err = tags(&["ok", raw]).unwrap_err();
            assert_eq!(err.field, "tags", "{raw:?}");
            assert!(err.reason.contains(why), "{raw:?}: {}", err.reason);
        }
    }

    #[test]
    fn more_than_ten_distinct_tags_are_refused() {
        let ten: Vec<String> = (0..MAX_TAGS).map(|i| format!("t{i}")).collect();
        assert_eq!(validate_tags(&ten).unwrap().len(), MAX_TAGS);
        let mut eleven = ten;
        eleven.push("t10".into());
        let err = validate_tags(&eleven).unwrap_err();
        assert_eq!(err.field, "tags");
        assert!(err.reason.contains("at most 10"));
    }
}
