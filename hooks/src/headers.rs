//! The request headers, as borrowed name/value pairs.

use std::fmt;

/// The headers of one delivery, borrowed from whatever HTTP library received it.
///
/// A plain list instead of `http::HeaderMap` keeps this crate free of an HTTP dependency
/// (and easy to fuzz); the agent builds one with
/// `req.headers().iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect()`.
/// Names compare ASCII-case-insensitively, as HTTP requires.
#[derive(Clone, Default)]
pub struct Headers<'a> {
    fields: Vec<(&'a str, &'a [u8])>,
}

/// The named header was sent more than once where we need exactly one value.
#[derive(Debug)]
pub(crate) struct Repeated<'n>(pub &'n str);

impl<'a> Headers<'a> {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a header, keeping earlier ones of the same name (HTTP allows repeats).
    pub fn push(&mut self, name: &'a str, value: &'a [u8]) {
        self.fields.push((name, value));
    }

    /// Adds a header and returns `self`, for building headers in one expression.
    pub fn with(mut self, name: &'a str, value: &'a [u8]) -> Self {
        self.push(name, value);
        self
    }

    /// The first value of `name`, without surrounding spaces or tabs (which HTTP does not
    /// count as part of the value).
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.all(name).next()
    }

    /// The value of `name` if it was sent exactly once. Used for the headers that decide
    /// something: with two signatures or two event names we could not say which one the
    /// sender meant.
    pub(crate) fn one<'n>(&self, name: &'n str) -> Result<Option<&'a [u8]>, Repeated<'n>> {
        let mut values = self.all(name);
        let first = values.next();
        match values.next() {
            Some(_) => Err(Repeated(name)),
            None => Ok(first),
        }
    }

    /// Like [`Headers::one`] for the first of several names that is present: hosts that
    /// were forked (Gitea, Forgejo) send the same thing under more than one name.
    pub(crate) fn first_of<'n>(&self, names: &[&'n str]) -> Result<Option<(&'n str, &'a [u8])>, Repeated<'n>> {
        for &name in names {
            if let Some(value) = self.one(name)? {
                return Ok(Some((name, value)));
            }
        }
        Ok(None)
    }

    fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a [u8]> + 's {
        self.fields.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| trim_ows(v))
    }
}

/// Strips only spaces and tabs, the optional whitespace of RFC 9110; other bytes stay and
/// make the value invalid where it matters.
pub(crate) fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &value[start..end]
}

impl<'a> FromIterator<(&'a str, &'a [u8])> for Headers<'a> {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a [u8])>>(iter: I) -> Self {
        Headers { fields: iter.into_iter().collect() }
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for Headers<'a> {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(iter: I) -> Self {
        iter.into_iter().map(|(n, v)| (n, v.as_bytes())).collect()
    }
}

/// Lists header names only: values include GitLab's token, which must not reach a log.
impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.fields.iter().map(|(n, _)| n)).finish()
    }
}
