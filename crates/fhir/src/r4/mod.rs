//! The generated R4 tables and the row types they are written in.

/// One row of the element table as the generator writes it.
pub(crate) struct RawElement {
    pub path: &'static str,
    pub types: &'static [&'static str],
    pub repeats: bool,
    pub content_ref: Option<&'static str>,
}

/// One search parameter for one base resource type.
pub(crate) struct RawSearchParam {
    pub base: &'static str,
    pub code: &'static str,
    pub kind: &'static str,
    pub expression: &'static str,
    pub targets: &'static [&'static str],
}

#[rustfmt::skip] // generated text, kept as the script writes it
mod generated;
pub(crate) use generated::*;
