//! The outcome of one source prerequisite check, shared by every source kind.

/// The result of one prerequisite check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    pub name: String,
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// What to run or set when the check fails.
    pub fix: Option<String>,
}

pub(crate) fn pass(name: impl Into<String>, detail: impl Into<String>) -> CheckOutcome {
    CheckOutcome {
        name: name.into(),
        ok: true,
        detail: detail.into(),
        fix: None,
    }
}

pub(crate) fn fail(
    name: impl Into<String>,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> CheckOutcome {
    CheckOutcome {
        name: name.into(),
        ok: false,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}
