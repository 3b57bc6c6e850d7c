//! A YAML (or JSON: YAML 1.2 reads it) document as a tree whose every node
//! knows its line and column, so that findings point into the file.

use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A place in a file: line and column, both from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A node and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What it holds.
    pub value: Value,
    /// Where it starts.
    pub at: Position,
}

/// A node's content. Scalars stay text: OpenAPI's meaning of a scalar
/// depends on where it is, not on YAML's guess.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar, as written (without quotes).
    Scalar(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, keys in order.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The entries of a mapping (none for another node).
    pub fn entries(&self) -> &[(Node, Node)] {
        match &self.value {
            Value::Map(entries) => entries,
            _ => &[],
        }
    }

    /// The items of a sequence (none for another node).
    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &[],
        }
    }

    /// The text of a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The node at a JSON pointer inside this document (`#/components/...`
    /// without the `#`), with `~1` and `~0` unescaped.
    pub fn pointer(&self, pointer: &str) -> Option<&Node> {
        if pointer.is_empty() {
            return Some(self);
        }
        let mut node = self;
        for token in pointer.strip_prefix('/')?.split('/') {
            let token = token.replace("~1", "/").replace("~0", "~");
            node = match &node.value {
                Value::Map(_) => node.get(&token)?,
                Value::Seq(items) => items.get(token.parse::<usize>().ok()?)?,
                Value::Scalar(_) => return None,
            };
        }
        Some(node)
    }
}

/// Why a document cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct ParseError {
    /// Where.
    pub at: Position,
    /// What.
    pub message: String,
}

enum Open {
    Seq(Position, Vec<Node>),
    Map(Position, Vec<(Node, Node)>, Option<Node>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    root: Option<Node>,
    error: Option<ParseError>,
}

fn position(mark: Marker) -> Position {
    // The scanner counts columns from 0.
    Position {
        line: mark.line(),
        column: mark.col() + 1,
    }
}

impl Builder {
    fn push(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Open::Seq(_, items)) => items.push(node),
            Some(Open::Map(_, entries, key)) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let at = position(mark);
        match event {
            Event::Scalar(text, ..) => self.push(Node {
                value: Value::Scalar(text),
                at,
            }),
            Event::SequenceStart(..) => self.stack.push(Open::Seq(at, Vec::new())),
            Event::MappingStart(..) => self.stack.push(Open::Map(at, Vec::new(), None)),
            Event::SequenceEnd | Event::MappingEnd => {
                // Block collections start at their first entry (the
                // parser's own mark for them is not where they are written).
                let node = match self.stack.pop() {
                    Some(Open::Seq(at, items)) => Node {
                        at: items.first().map_or(at, |n| n.at),
                        value: Value::Seq(items),
                    },
                    Some(Open::Map(at, entries, _)) => Node {
                        at: entries.first().map_or(at, |(k, _)| k.at),
                        value: Value::Map(entries),
                    },
                    None => return,
                };
                self.push(node);
            }
            // Anchors would let one node stand in two places; OpenAPI
            // documents use $ref for that.
            Event::Alias(_) if self.error.is_none() => {
                self.error = Some(ParseError {
                    at,
                    message: "YAML aliases are not supported; use $ref".into(),
                });
            }
            _ => {}
        }
    }
}

/// Parses a YAML or JSON document (the first one of a stream).
pub fn parse(source: &str) -> Result<Node, ParseError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(source);
    parser.load(&mut builder, false).map_err(|e| ParseError {
        at: position(*e.marker()),
        message: e.info().to_owned(),
    })?;
    if let Some(error) = builder.error {
        return Err(error);
    }
    builder.root.ok_or_else(|| ParseError {
        at: Position { line: 1, column: 1 },
        message: "the document is empty".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_nodes_know_where_they_are() {
        let yaml = parse("openapi: 3.1.0\npaths:\n  /a:\n    post:\n      operationId: x\n").unwrap();
        let post = yaml.pointer("/paths/~1a/post").unwrap();
        assert_eq!(post.at, Position { line: 5, column: 7 });
        let key = &yaml.get("paths").unwrap().entries()[0].1.entries()[0].0;
        assert_eq!(key.as_str(), Some("post"));
        assert_eq!(key.at, Position { line: 4, column: 5 });

        let json = parse("{\n  \"paths\": {\n    \"/a\": {\"get\": {}}\n  }\n}").unwrap();
        let get_key = &json.pointer("/paths/~1a").unwrap().entries()[0].0;
        assert_eq!(get_key.as_str(), Some("get"));
        assert_eq!(get_key.at, Position { line: 3, column: 12 });
    }

    #[test]
    fn bad_documents_are_located() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.at.line >= 1, "{e}");
        assert!(parse("a: &x 1\nb: *x\n").unwrap_err().message.contains("aliases"));
        assert!(parse("").is_err());
    }
}
