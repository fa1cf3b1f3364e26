//! Errors raised by validation and by reading case documents.

use crate::catalog::Role;

/// What was wrong with data offered to the model. Every variant names the offending value so an
/// app can tell the worker what to fix.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ModelError {
    #[error("invalid coordinates lat={lat} lon={lon}: latitude must be within ±90 and longitude within ±180")]
    InvalidCoordinates { lat: f64, lon: f64 },
    #[error("invalid location accuracy {accuracy_m} m: must be a finite, non-negative number")]
    InvalidAccuracy { accuracy_m: f64 },
    #[error("the title is empty: give the case a short title")]
    EmptyTitle,
    #[error("{field} is {chars} characters long; at most {max} are allowed")]
    TextTooLong { field: &'static str, chars: usize, max: usize },
    #[error("satisfaction must be between 1 and 5, got {value}")]
    InvalidSatisfaction { value: u8 },
    #[error("a dispatch needs at least one department")]
    NoDepartments,
    #[error("{kind} is not allowed for a {role:?} when the case is {from}")]
    TransitionNotAllowed { kind: String, from: String, role: Role },
    #[error("the case document is malformed: {reason}")]
    MalformedDocument { reason: String },
    #[error("automerge: {0}")]
    Automerge(String),
}

impl From<automerge::AutomergeError> for ModelError {
    fn from(e: automerge::AutomergeError) -> Self {
        ModelError::Automerge(e.to_string())
    }
}

/// Checks a free-text field's length, counted in characters as a worker sees them.
pub fn check_text(field: &'static str, text: &str) -> Result<(), ModelError> {
    let chars = text.chars().count();
    if chars > crate::MAX_TEXT_CHARS {
        return Err(ModelError::TextTooLong { field, chars, max: crate::MAX_TEXT_CHARS });
    }
    Ok(())
}
