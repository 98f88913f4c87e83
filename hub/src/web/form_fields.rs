//! Reading the text fields of HTML forms.

use std::str::FromStr;

use super::error::AppError;

/// A whole number from a form field, `None` when it was left empty. `what` names the field
/// in the error ("the number of cores").
pub(crate) fn optional_number<T: FromStr>(text: &str, what: &str) -> Result<Option<T>, AppError> {
    match text.trim() {
        "" => Ok(None),
        text => text
            .parse()
            .map(Some)
            .map_err(|_| AppError::BadRequest(format!("{what} is a whole number"))),
    }
}
