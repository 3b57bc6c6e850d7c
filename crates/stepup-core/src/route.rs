//! Path templates and the route table.
//!
//! A template such as `/accounts/{id}/payees` is a list of segments, each a
//! literal, a parameter (`{id}`, one segment) or, last only, a wildcard
//! (`{*rest}`, one or more segments). The table is a trie over segments;
//! lookup prefers, segment by segment from the left, a literal over a
//! parameter over a wildcard, and backtracks when a branch has no route for
//! the request's method. That order is what "most specific wins" means here,
//! and it costs one hash lookup per segment, whatever the number of routes.
//!
//! Request paths are matched the way HTTP routers (axum's matchit, and most
//! others) match them, so that the rule the guard picks is the rule of the
//! handler that will run: segments are compared raw, without decoding, and
//! empty segments are real segments (`/accounts//payees` has an empty `{id}`,
//! and `/payees/` is not `/payees`). Spellings on which routers and proxies
//! disagree are refused outright: dot segments, percent-encoded unreserved
//! characters (RFC 3986 §2.3 says never to produce them, and a server that
//! decodes them would see another path than the guard), encoded `/` and `\`.

use std::collections::HashMap;
use std::fmt;

use thiserror::Error;

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Matches exactly this (decoded) text.
    Literal(String),
    /// Matches any one segment.
    Param(String),
    /// Matches one or more remaining segments.
    Wildcard(String),
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    text: String,
    segments: Vec<Segment>,
}

/// Why a path template is malformed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// Templates are absolute.
    #[error("a path template must start with '/'")]
    NotAbsolute,
    /// `//` inside a template.
    #[error("empty segment at byte {at} (remove the doubled '/')")]
    EmptySegment {
        /// Byte offset in the template.
        at: usize,
    },
    /// `{` without `}` or the reverse, or braces inside a literal.
    #[error(
        "unbalanced or misplaced brace in segment {segment:?}; a parameter is a whole segment like {{id}}"
    )]
    Brace {
        /// The offending segment.
        segment: String,
    },
    /// A parameter name that is not an identifier.
    #[error("parameter name {name:?} must be letters, digits or '_'")]
    BadParamName {
        /// The offending name.
        name: String,
    },
    /// The same parameter name twice.
    #[error("parameter {name:?} appears twice")]
    DuplicateParam {
        /// The repeated name.
        name: String,
    },
    /// A wildcard that is not the last segment.
    #[error("wildcard {{*{name}}} must be the last segment")]
    WildcardNotLast {
        /// The wildcard's name.
        name: String,
    },
    /// `.` or `..` segments, or characters that would be normalised away.
    #[error(
        "segment {segment:?} is not allowed in a template (expected letters, digits and -._~!$&'()*+,;=:@; no dot segments, no percent-encoding)"
    )]
    BadLiteral {
        /// The offending segment.
        segment: String,
    },
}

impl PathTemplate {
    /// Parses a template.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let rest = text.strip_prefix('/').ok_or(TemplateError::NotAbsolute)?;
        let mut segments = Vec::new();
        if !rest.is_empty() {
            let mut offset = 1;
            let pieces: Vec<&str> = rest.split('/').collect();
            let count = pieces.len();
            for (i, piece) in pieces.into_iter().enumerate() {
                // A trailing slash is a segment of its own, as routers see it:
                // `/a/` matches `/a/` and not `/a`.
                if piece.is_empty() {
                    if i + 1 == count {
                        segments.push(Segment::Literal(String::new()));
                        break;
                    }
                    return Err(TemplateError::EmptySegment { at: offset });
                }
                offset += piece.len() + 1;
                segments.push(parse_segment(piece, i + 1 == count)?);
            }
        }
        let mut names: Vec<&str> = Vec::new();
        for s in &segments {
            if let Segment::Param(n) | Segment::Wildcard(n) = s {
                if names.contains(&n.as_str()) {
                    return Err(TemplateError::DuplicateParam { name: n.clone() });
                }
                names.push(n);
            }
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The template's shape: the same paths are matched by two templates
    /// exactly when their shapes are equal (parameter names do not matter).
    pub fn shape(&self) -> Vec<ShapeSegment<'_>> {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => ShapeSegment::Literal(l),
                Segment::Param(_) => ShapeSegment::Param,
                Segment::Wildcard(_) => ShapeSegment::Wildcard,
            })
            .collect()
    }

    /// Whether every path matched by `other` is also matched by `self`.
    pub fn covers(&self, other: &PathTemplate) -> bool {
        let mine = &self.segments;
        let theirs = &other.segments;
        for (i, seg) in mine.iter().enumerate() {
            match seg {
                Segment::Wildcard(_) => return theirs.len() > i,
                Segment::Param(_) => match theirs.get(i) {
                    Some(Segment::Literal(_) | Segment::Param(_)) => {}
                    _ => return false,
                },
                Segment::Literal(l) => match theirs.get(i) {
                    Some(Segment::Literal(t)) if t == l => {}
                    _ => return false,
                },
            }
        }
        mine.len() == theirs.len()
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A segment of a template's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShapeSegment<'a> {
    /// A literal segment.
    Literal(&'a str),
    /// A parameter.
    Param,
    /// A wildcard.
    Wildcard,
}

fn parse_segment(piece: &str, last: bool) -> Result<Segment, TemplateError> {
    if let Some(inner) = piece.strip_prefix('{') {
        let name = inner.strip_suffix('}').ok_or_else(|| TemplateError::Brace {
            segment: piece.to_owned(),
        })?;
        let (wildcard, name) = match name.strip_prefix('*') {
            Some(n) => (true, n),
            None => (false, name),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(TemplateError::BadParamName {
                name: name.to_owned(),
            });
        }
        if wildcard {
            if !last {
                return Err(TemplateError::WildcardNotLast {
                    name: name.to_owned(),
                });
            }
            return Ok(Segment::Wildcard(name.to_owned()));
        }
        return Ok(Segment::Param(name.to_owned()));
    }
    if piece.contains(['{', '}']) {
        return Err(TemplateError::Brace {
            segment: piece.to_owned(),
        });
    }
    // pchar without percent-encoding (RFC 3986 §3.3): requests carry such
    // literals byte for byte, so raw comparison finds them.
    let pchar = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@".contains(c);
    if piece == "." || piece == ".." || !piece.chars().all(pchar) {
        return Err(TemplateError::BadLiteral {
            segment: piece.to_owned(),
        });
    }
    Ok(Segment::Literal(piece.to_owned()))
}

/// Why a request path cannot be matched safely.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RequestPathError {
    /// The path does not start with `/`.
    #[error("the request path must start with '/'")]
    NotAbsolute,
    /// A `.` or `..` segment.
    #[error("dot segments are not allowed in the request path")]
    DotSegment,
    /// A percent-encoded unreserved character, `/` or `\`: servers disagree
    /// on whether to decode them before routing.
    #[error(
        "percent-encoded letters, digits, '-', '.', '_', '~', '/' or '\\' are not allowed in the request path"
    )]
    AmbiguousEncoding,
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding in the request path")]
    BadPercentEncoding,
    /// A byte RFC 3986 does not allow unencoded in a path, which HTTP
    /// libraries accept anyway (`\`, `|`, `{`, `"`, non-ASCII): servers
    /// read them differently (`\` as `/` for WHATWG URL parsers and IIS).
    #[error("{0:?} is not allowed in the request path: percent-encode it (RFC 3986 §3.3)")]
    NotRfc3986(char),
}

/// The raw segments of a request path, as a router matches them.
pub(crate) fn request_segments(path: &str) -> Result<Segments<'_>, RequestPathError> {
    let rest = path.strip_prefix('/').ok_or(RequestPathError::NotAbsolute)?;
    let mut out = Segments::default();
    if rest.is_empty() {
        return Ok(out);
    }
    for segment in rest.split('/') {
        if segment == "." || segment == ".." {
            return Err(RequestPathError::DotSegment);
        }
        check_encoding(segment)?;
        out.push(segment);
    }
    Ok(out)
}

/// How many segments a request path keeps on the stack; longer paths
/// spill to the heap. Deciding a request then allocates nothing.
const INLINE_SEGMENTS: usize = 16;

/// The segments of a request path.
#[derive(Debug)]
// Large on purpose: the inline array is what keeps decisions off the heap,
// and a value lives only for one lookup.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Segments<'a> {
    Inline([&'a str; INLINE_SEGMENTS], usize),
    Heap(Vec<&'a str>),
}

impl Default for Segments<'_> {
    fn default() -> Self {
        Segments::Inline([""; INLINE_SEGMENTS], 0)
    }
}

impl<'a> Segments<'a> {
    fn push(&mut self, segment: &'a str) {
        match self {
            Segments::Inline(array, len) if *len < INLINE_SEGMENTS => {
                array[*len] = segment;
                *len += 1;
            }
            Segments::Inline(array, len) => {
                let mut heap = array[..*len].to_vec();
                heap.push(segment);
                *self = Segments::Heap(heap);
            }
            Segments::Heap(v) => v.push(segment),
        }
    }
}

impl<'a> std::ops::Deref for Segments<'a> {
    type Target = [&'a str];
    fn deref(&self) -> &[&'a str] {
        match self {
            Segments::Inline(array, len) => &array[..*len],
            Segments::Heap(v) => v,
        }
    }
}

/// Whether `b` may stand unencoded in a path segment (RFC 3986 §3.3
/// pchar: unreserved, sub-delims, `:` and `@`; `%` is read apart).
fn is_pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b)
}

fn check_encoding(segment: &str) -> Result<(), RequestPathError> {
    let bytes = segment.as_bytes();
    let mut i = 0;
    while let Some(offset) = bytes[i..].iter().position(|&b| !is_pchar(b)) {
        let at = i + offset;
        if bytes[at] != b'%' {
            let c = segment[at..]
                .chars()
                .next()
                .unwrap_or(char::REPLACEMENT_CHARACTER);
            return Err(RequestPathError::NotRfc3986(c));
        }
        let hex = |b: Option<&u8>| b.and_then(|b| char::from(*b).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(bytes.get(at + 1)), hex(bytes.get(at + 2))) else {
            return Err(RequestPathError::BadPercentEncoding);
        };
        let decoded = u8::try_from(hi * 16 + lo).map_err(|_| RequestPathError::BadPercentEncoding)?;
        if decoded.is_ascii_alphanumeric() || b"-._~/\\".contains(&decoded) {
            return Err(RequestPathError::AmbiguousEncoding);
        }
        i = at + 3;
    }
    Ok(())
}

/// Which methods a route applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Methods {
    /// Any method not claimed by a more specific route of the same shape.
    Any,
    /// These methods (upper-case tokens). `GET` also covers `HEAD` unless a
    /// route names `HEAD` itself, as HTTP servers answer HEAD with GET's handler.
    Only(Vec<String>),
}

#[derive(Debug, Default)]
struct Node {
    literals: HashMap<String, Node>,
    param: Option<Box<Node>>,
    wildcard: Option<Box<Node>>,
    /// Routes ending here: (method → route index), plus the any-method route.
    by_method: Vec<(String, usize)>,
    any: Option<usize>,
}

impl Node {
    fn route_for(&self, method: &str) -> Option<usize> {
        if let Some((_, r)) = self.by_method.iter().find(|(m, _)| m == method) {
            return Some(*r);
        }
        if method == "HEAD"
            && let Some((_, r)) = self.by_method.iter().find(|(m, _)| m == "GET")
        {
            return Some(*r);
        }
        self.any
    }
}

/// A route table: templates and methods mapped to route indices.
#[derive(Debug, Default)]
pub struct RouteTable {
    root: Node,
}

/// Two routes that claim the same method on the same shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The route inserted first.
    pub first: usize,
    /// The route that collided with it.
    pub second: usize,
    /// The method both claim, or `None` when both apply to any method.
    pub method: Option<String>,
}

impl RouteTable {
    /// Adds route `index`; reports a conflict with an earlier route instead
    /// of silently letting one of them win.
    pub fn insert(
        &mut self,
        template: &PathTemplate,
        methods: &Methods,
        index: usize,
    ) -> Result<(), Conflict> {
        let mut node = &mut self.root;
        for seg in template.segments() {
            node = match seg {
                Segment::Literal(l) => node.literals.entry(l.clone()).or_default(),
                Segment::Param(_) => node.param.get_or_insert_with(Box::default),
                Segment::Wildcard(_) => node.wildcard.get_or_insert_with(Box::default),
            };
        }
        match methods {
            Methods::Any => {
                if let Some(first) = node.any {
                    return Err(Conflict {
                        first,
                        second: index,
                        method: None,
                    });
                }
                node.any = Some(index);
            }
            Methods::Only(list) => {
                for m in list {
                    if let Some((_, first)) = node.by_method.iter().find(|(have, _)| have == m) {
                        return Err(Conflict {
                            first: *first,
                            second: index,
                            method: Some(m.clone()),
                        });
                    }
                }
                for m in list {
                    node.by_method.push((m.clone(), index));
                }
            }
        }
        Ok(())
    }

    /// The most specific route for a method and already-split path.
    pub(crate) fn lookup(&self, method: &str, segments: &[&str]) -> Option<usize> {
        lookup_in(&self.root, method, segments)
    }
}

fn lookup_in(node: &Node, method: &str, segments: &[&str]) -> Option<usize> {
    let Some((first, rest)) = segments.split_first() else {
        return node.route_for(method);
    };
    if let Some(child) = node.literals.get(*first)
        && let Some(found) = lookup_in(child, method, rest)
    {
        return Some(found);
    }
    if let Some(child) = &node.param
        && let Some(found) = lookup_in(child, method, rest)
    {
        return Some(found);
    }
    node.wildcard.as_ref().and_then(|child| child.route_for(method))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> PathTemplate {
        PathTemplate::parse(s).unwrap()
    }

    fn table(routes: &[(&str, Methods)]) -> RouteTable {
        let mut table = RouteTable::default();
        for (i, (p, m)) in routes.iter().enumerate() {
            table.insert(&t(p), m, i).unwrap();
        }
        table
    }

    fn find(table: &RouteTable, method: &str, path: &str) -> Option<usize> {
        let segs = request_segments(path).unwrap();
        table.lookup(method, &segs)
    }

    fn only(m: &[&str]) -> Methods {
        Methods::Only(m.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn long_paths_spill_to_the_heap_and_keep_every_segment() {
        let long: String = (0..40).map(|i| format!("/s{i}")).collect();
        let segments = request_segments(&long).unwrap();
        assert_eq!(segments.len(), 40);
        assert_eq!(segments[0], "s0");
        assert_eq!(segments[39], "s39");
        assert!(matches!(segments, Segments::Heap(_)));
        assert!(matches!(
            request_segments("/a/b").unwrap(),
            Segments::Inline(_, 2)
        ));
        assert!(request_segments("/").unwrap().is_empty());
    }

    #[test]
    fn template_errors_are_specific() {
        assert_eq!(PathTemplate::parse("a"), Err(TemplateError::NotAbsolute));
        assert_eq!(
            PathTemplate::parse("/a//b"),
            Err(TemplateError::EmptySegment { at: 3 })
        );
        assert!(matches!(
            PathTemplate::parse("/a/{id"),
            Err(TemplateError::Brace { .. })
        ));
        assert!(matches!(
            PathTemplate::parse("/a/x{id}"),
            Err(TemplateError::Brace { .. })
        ));
        assert!(matches!(
            PathTemplate::parse("/a/{i-d}"),
            Err(TemplateError::BadParamName { .. })
        ));
        assert!(matches!(
            PathTemplate::parse("/a/{}"),
            Err(TemplateError::BadParamName { .. })
        ));
        assert!(matches!(
            PathTemplate::parse("/{id}/{id}"),
            Err(TemplateError::DuplicateParam { .. })
        ));
        assert!(matches!(
            PathTemplate::parse("/{*r}/x"),
            Err(TemplateError::WildcardNotLast { .. })
        ));
        assert!(matches!(
            PathTemplate::parse("/a/../b"),
            Err(TemplateError::BadLiteral { .. })
        ));
        assert!(matches!(
            PathTemplate::parse("/a%2f"),
            Err(TemplateError::BadLiteral { .. })
        ));
        assert!(matches!(
            PathTemplate::parse("/a b"),
            Err(TemplateError::BadLiteral { .. })
        ));
        assert!(matches!(
            PathTemplate::parse("/caf\u{e9}"),
            Err(TemplateError::BadLiteral { .. })
        ));
        assert_eq!(t("/").segments().len(), 0);
        assert_eq!(
            t("/a/").segments(),
            [Segment::Literal("a".into()), Segment::Literal(String::new())]
        );
        assert!(PathTemplate::parse("/v1/users/me:activate").is_ok());
    }

    #[test]
    fn literal_beats_param_beats_wildcard() {
        let tb = table(&[
            ("/accounts/{*rest}", Methods::Any),
            ("/accounts/{id}", Methods::Any),
            ("/accounts/mine", Methods::Any),
        ]);
        assert_eq!(find(&tb, "GET", "/accounts/mine"), Some(2));
        assert_eq!(find(&tb, "GET", "/accounts/42"), Some(1));
        assert_eq!(find(&tb, "GET", "/accounts/42/payees"), Some(0));
        assert_eq!(find(&tb, "GET", "/accounts"), None);
        assert_eq!(find(&tb, "GET", "/other"), None);
    }

    #[test]
    fn method_specific_beats_any_and_backtracks() {
        let tb = table(&[
            ("/accounts/{id}/payees", only(&["POST"])),
            ("/accounts/{*rest}", Methods::Any),
            ("/accounts/{id}/payees", only(&["GET"])),
        ]);
        assert_eq!(find(&tb, "POST", "/accounts/1/payees"), Some(0));
        assert_eq!(find(&tb, "GET", "/accounts/1/payees"), Some(2));
        assert_eq!(find(&tb, "HEAD", "/accounts/1/payees"), Some(2));
        // No DELETE route on the exact shape: the wildcard route applies.
        assert_eq!(find(&tb, "DELETE", "/accounts/1/payees"), Some(1));
    }

    #[test]
    fn paths_are_matched_as_routers_match_them() {
        let tb = table(&[("/accounts/{id}/payees", only(&["POST"])), ("/a/", Methods::Any)]);
        assert_eq!(find(&tb, "POST", "/accounts/1/payees"), Some(0));
        // An empty segment is a (empty) parameter value for the router too.
        assert_eq!(find(&tb, "POST", "/accounts//payees"), Some(0));
        // A trailing slash is another path, for the router as for the guard.
        assert_eq!(find(&tb, "POST", "/accounts/1/payees/"), None);
        assert_eq!(find(&tb, "POST", "//accounts/1/payees"), None);
        assert_eq!(find(&tb, "GET", "/a/"), Some(1));
        assert_eq!(find(&tb, "GET", "/a"), None);
        // Encoded characters that are not unreserved stay as they are.
        assert_eq!(
            request_segments("/a%20b/%C3%A9").unwrap().to_vec(),
            vec!["a%20b", "%C3%A9"]
        );
    }

    #[test]
    fn ambiguous_request_paths_are_refused() {
        use RequestPathError::*;
        for (path, error) in [
            ("/a/../b", DotSegment),
            ("/a/./b", DotSegment),
            ("/a/%2e%2E/b", AmbiguousEncoding),
            ("/accounts/1/%70ayees", AmbiguousEncoding),
            ("/a%2Fb", AmbiguousEncoding),
            ("/a%5cb", AmbiguousEncoding),
            ("/a%7E", AmbiguousEncoding),
            ("/a%zz", BadPercentEncoding),
            ("/a%4", BadPercentEncoding),
            ("/a%", BadPercentEncoding),
            ("a", NotAbsolute),
            // Raw bytes HTTP libraries accept and RFC 3986 does not: a
            // backslash read as '/' by WHATWG parsers and IIS, and others.
            ("/accounts/1\\statements", NotRfc3986('\\')),
            ("/a|b", NotRfc3986('|')),
            ("/a{b}", NotRfc3986('{')),
            ("/a\"b", NotRfc3986('"')),
            ("/a[0]", NotRfc3986('[')),
            ("/\u{17F}tatements", NotRfc3986('\u{17F}')),
            ("/a b", NotRfc3986(' ')),
        ] {
            assert_eq!(request_segments(path).err(), Some(error), "{path}");
        }
    }

    #[test]
    fn conflicts_are_reported() {
        let mut tb = RouteTable::default();
        tb.insert(&t("/a/{id}"), &only(&["GET", "POST"]), 0).unwrap();
        let c = tb.insert(&t("/a/{name}"), &only(&["POST"]), 1).unwrap_err();
        assert_eq!(
            c,
            Conflict {
                first: 0,
                second: 1,
                method: Some("POST".into())
            }
        );
        tb.insert(&t("/a/{x}"), &Methods::Any, 2).unwrap();
        assert!(tb.insert(&t("/a/{y}"), &Methods::Any, 3).is_err());
    }

    #[test]
    fn covers_relation() {
        assert!(t("/a/{*r}").covers(&t("/a/b/c")));
        assert!(t("/a/{*r}").covers(&t("/a/{id}")));
        assert!(!t("/a/{*r}").covers(&t("/a")));
        assert!(t("/a/{id}").covers(&t("/a/b")));
        assert!(!t("/a/b").covers(&t("/a/{id}")));
        assert!(!t("/a/{id}").covers(&t("/a/{*r}")));
        assert!(t("/a/{id}").covers(&t("/a/{x}")));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A template segment drawn from a small alphabet so that routes overlap often.
        fn segment() -> impl Strategy<Value = String> {
            prop_oneof![Just("a".to_owned()), Just("b".to_owned()), Just("{p}".to_owned()),]
        }

        fn template() -> impl Strategy<Value = String> {
            (proptest::collection::vec(segment(), 0..4), any::<bool>()).prop_map(|(segs, wild)| {
                let mut path = String::new();
                for (i, s) in segs.iter().enumerate() {
                    // Parameter names must be unique within a template.
                    path.push('/');
                    path.push_str(&s.replace("{p}", &format!("{{p{i}}}")));
                }
                if wild {
                    path.push_str("/{*rest}");
                }
                if path.is_empty() { "/".to_owned() } else { path }
            })
        }

        fn methods() -> impl Strategy<Value = Methods> {
            prop_oneof![
                Just(Methods::Any),
                Just(only(&["GET"])),
                Just(only(&["POST"])),
                Just(only(&["GET", "POST"])),
            ]
        }

        /// Whether a template matches a request path, by brute force.
        fn matches(t: &PathTemplate, path: &[&str]) -> bool {
            let segs = t.segments();
            for (i, s) in segs.iter().enumerate() {
                match s {
                    Segment::Wildcard(_) => return path.len() > i,
                    Segment::Param(_) => {
                        if path.get(i).is_none() {
                            return false;
                        }
                    }
                    Segment::Literal(l) => {
                        if path.get(i) != Some(&l.as_str()) {
                            return false;
                        }
                    }
                }
            }
            segs.len() == path.len()
        }

        /// Specificity as the documentation states it: segment kinds left
        /// to right (literal > param > wildcard), then exact method > GET for
        /// HEAD > any method.
        fn rank(t: &PathTemplate, m: &Methods, method: &str) -> Option<(Vec<u8>, u8)> {
            let kinds = t
                .segments()
                .iter()
                .map(|s| match s {
                    Segment::Literal(_) => 2,
                    Segment::Param(_) => 1,
                    Segment::Wildcard(_) => 0,
                })
                .collect();
            let method_rank = match m {
                Methods::Only(list) if list.iter().any(|x| x == method) => 2,
                Methods::Only(list) if method == "HEAD" && list.iter().any(|x| x == "GET") => 1,
                Methods::Only(_) => return None,
                Methods::Any => 0,
            };
            Some((kinds, method_rank))
        }

        proptest! {
            #[test]
            fn lookup_picks_the_most_specific_matching_route(
                routes in proptest::collection::vec((template(), methods()), 1..8),
                path in proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c"), Just("")], 0..5),
                method in prop_oneof![Just("GET"), Just("POST"), Just("HEAD"), Just("PUT")],
            ) {
                let mut table = RouteTable::default();
                let mut kept: Vec<(PathTemplate, Methods, usize)> = Vec::new();
                for (i, (text, m)) in routes.iter().enumerate() {
                    let t = PathTemplate::parse(text).unwrap();
                    if table.insert(&t, m, i).is_ok() {
                        kept.push((t, m.clone(), i));
                    }
                }
                let request = format!("/{}", path.join("/"));
                let segments = request_segments(&request).unwrap();
                let found = table.lookup(method, &segments);
                // An exact-method route of the same shape can fail on HEAD
                // while a GET route exists: a tie in rank is then impossible,
                // because a shape admits one route per method.
                let expected = kept
                    .iter()
                    .filter(|(t, _, _)| matches(t, &segments))
                    .filter_map(|(t, m, i)| rank(t, m, method).map(|r| (r, *i)))
                    .max_by(|a, b| a.0.cmp(&b.0))
                    .map(|(_, i)| i);
                prop_assert_eq!(found, expected, "request {} {}", method, request);
            }

            #[test]
            fn request_segments_never_panic(path in "\\PC*") {
                let _ = request_segments(&path);
            }
        }
    }
}
