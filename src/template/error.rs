//! The one error type of the template engine; a leaf module, so the lexer, parser and
//! executor never import their parent.

/// A parse or execution error, as Go's text/template words it, with the line and column of
/// the action at fault (none for a template refused as a whole).
#[derive(Debug, thiserror::Error)]
#[error(
    "{msg}{}",
    .at.map(|(line, column)| format!(" (line {line}, column {column})")).unwrap_or_default()
)]
pub struct TemplateError {
    msg: String,
    at: Option<(usize, usize)>,
}

impl TemplateError {
    /// An error about the template as a whole (no position).
    pub(crate) fn whole(msg: impl Into<String>) -> TemplateError {
        TemplateError {
            msg: msg.into(),
            at: None,
        }
    }

    pub(crate) fn at(src: &str, pos: usize, msg: impl Into<String>) -> TemplateError {
        let before = src.get(..pos.min(src.len())).unwrap_or(src);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |l| l.chars().count()) + 1;
        TemplateError {
            msg: msg.into(),
            at: Some((line, column)),
        }
    }
}
