//! Sizes the web layer enforces.

/// The largest form the portal accepts.
pub(crate) const MAX_FORM_BYTES: usize = 64 * 1024;

/// The largest file upload the portal accepts (a class roster of 10,000 people fits).
pub(crate) const MAX_UPLOAD_BYTES: usize = 4 * 1024 * 1024;
