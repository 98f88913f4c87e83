//! Sizes the web layer enforces.

/// The largest form the portal accepts.
pub(crate) const MAX_FORM_BYTES: usize = 64 * 1024;
