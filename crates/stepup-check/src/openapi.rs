//! The operations of an OpenAPI 3.x description, with where each is
//! written, its sensitivity mark and its JSON request body schema.

use crate::located::{self, Node, Position};

/// The methods OpenAPI path items may hold.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The extension that marks an operation's sensitivity.
pub const SENSITIVITY: &str = "x-stepup-sensitivity";

/// One operation: a method on a path.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// Upper-case method (`POST`).
    pub method: String,
    /// The path template as written in the spec (`/accounts/{id}/payees`).
    pub path: String,
    /// Where the operation is written (its method key).
    pub at: Position,
    /// `operationId`, when given.
    pub operation_id: Option<String>,
    /// The `x-stepup-sensitivity` value, when given.
    pub sensitivity: Option<String>,
    /// The `application/json` request body schema (a `$ref` resolved).
    pub body_schema: Option<Node>,
    /// Where the operation names its body schema (the `$ref`, or the
    /// schema written in place).
    pub body_at: Option<Position>,
}

impl Operation {
    /// `POST /accounts/{id}/payees`.
    pub fn label(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Whether the method changes state (RFC 9110 §9.2.1: not safe).
    pub fn changes_state(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }

    /// A concrete request path of the template: each `{param}` replaced by
    /// a sample value.
    pub fn sample_path(&self) -> String {
        let mut out = String::with_capacity(self.path.len());
        let mut rest = self.path.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            match rest[open..].find('}') {
                Some(close) => {
                    out.push_str("stepup-sample");
                    rest = &rest[open + close + 1..];
                }
                None => {
                    rest = &rest[open..];
                    break;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// An OpenAPI description: its document and its operations.
#[derive(Debug, Clone)]
pub struct ApiSpec {
    /// The whole document, for `$ref`s.
    pub document: Node,
    /// Every operation, in document order.
    pub operations: Vec<Operation>,
}

/// Why a description cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct SpecError {
    /// Where.
    pub at: Position,
    /// What.
    pub message: String,
}

impl From<located::ParseError> for SpecError {
    fn from(e: located::ParseError) -> Self {
        SpecError {
            at: e.at,
            message: e.message,
        }
    }
}

impl ApiSpec {
    /// Reads an OpenAPI 3.x description (YAML or JSON).
    pub fn parse(source: &str) -> Result<Self, SpecError> {
        let document = located::parse(source)?;
        let version = document.get("openapi").and_then(Node::as_str);
        if !version.is_some_and(|v| v.starts_with("3.")) {
            return Err(SpecError {
                at: document.get("openapi").map_or(document.at, |n| n.at),
                message: format!(
                    "expected an OpenAPI 3.x description (`openapi: 3.x`), found {}",
                    version.map_or("no `openapi` field".to_owned(), |v| format!("`openapi: {v}`"))
                ),
            });
        }
        let mut operations = Vec::new();
        let paths = document.get("paths");
        for (path_key, item) in paths.map(Node::entries).unwrap_or_default() {
            let Some(path) = path_key.as_str() else { continue };
            if !path.starts_with('/') {
                return Err(SpecError {
                    at: path_key.at,
                    message: format!("path {path:?} must start with '/'"),
                });
            }
            for (method_key, operation) in item.entries() {
                let Some(method) = method_key.as_str().filter(|m| METHODS.contains(m)) else {
                    continue;
                };
                let sensitivity = operation
                    .get(SENSITIVITY)
                    .and_then(Node::as_str)
                    .map(str::to_owned);
                let schema = operation.pointer("/requestBody/content/application~1json/schema");
                let body_schema = schema.map(|schema| resolve(&document, schema).clone());
                let body_at = schema.map(|schema| schema.at);
                operations.push(Operation {
                    method: method.to_ascii_uppercase(),
                    path: path.to_owned(),
                    at: method_key.at,
                    operation_id: operation
                        .get("operationId")
                        .and_then(Node::as_str)
                        .map(str::to_owned),
                    sensitivity,
                    body_schema,
                    body_at,
                });
            }
        }
        Ok(Self { document, operations })
    }

    /// Whether a JSON body valid for `schema` can hold a value at `pointer`:
    /// `Some(false)` when the schema lists its properties and the pointer
    /// leaves them; `None` when the schema does not say (no properties, or
    /// open to any).
    pub fn body_has(&self, schema: &Node, pointer: &str) -> Option<bool> {
        let mut node = resolve(&self.document, schema);
        let Some(tokens) = pointer.strip_prefix('/') else {
            return Some(pointer.is_empty());
        };
        for token in tokens.split('/') {
            let token = token.replace("~1", "/").replace("~0", "~");
            if let Some(items) = node.get("items")
                && token.parse::<usize>().is_ok()
            {
                node = resolve(&self.document, items);
                continue;
            }
            let mut found = None;
            let mut listed = false;
            for part in std::iter::once(node).chain(node.get("allOf").map(Node::items).unwrap_or_default()) {
                let part = resolve(&self.document, part);
                if let Some(properties) = part.get("properties") {
                    listed = true;
                    if let Some(p) = properties.get(&token) {
                        found = Some(resolve(&self.document, p));
                        break;
                    }
                }
            }
            match found {
                Some(next) => node = next,
                None => {
                    let open = node
                        .get("additionalProperties")
                        .is_some_and(|a| a.as_str() != Some("false"));
                    return if listed && !open { Some(false) } else { None };
                }
            }
        }
        Some(true)
    }
}

/// Follows local `$ref`s (`#/components/schemas/X`), at most 16 deep.
fn resolve<'a>(document: &'a Node, mut node: &'a Node) -> &'a Node {
    for _ in 0..16 {
        let Some(target) = node
            .get("$ref")
            .and_then(Node::as_str)
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|p| document.pointer(p))
        else {
            return node;
        };
        node = target;
    }
    node
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r##"
openapi: 3.0.3
info: { title: t, version: "1" }
paths:
  /accounts/{id}/transfers:
    parameters: []
    post:
      operationId: transfer
      x-stepup-sensitivity: critical
      requestBody:
        content:
          application/json:
            schema: { $ref: "#/components/schemas/Transfer" }
    get: {}
components:
  schemas:
    Transfer:
      allOf:
        - $ref: "#/components/schemas/Money"
        - type: object
          properties:
            to: { type: string }
            lines: { type: array, items: { $ref: "#/components/schemas/Money" } }
    Money:
      type: object
      additionalProperties: false
      properties:
        amount: { type: number }
        currency: { type: string }
"##;

    #[test]
    fn operations_with_their_places_marks_and_bodies() {
        let spec = ApiSpec::parse(SPEC).unwrap();
        assert_eq!(spec.operations.len(), 2);
        let post = &spec.operations[0];
        assert_eq!(post.label(), "POST /accounts/{id}/transfers");
        assert_eq!(post.at, Position { line: 7, column: 5 });
        assert_eq!(post.sensitivity.as_deref(), Some("critical"));
        assert_eq!(post.operation_id.as_deref(), Some("transfer"));
        assert!(post.changes_state());
        assert_eq!(post.sample_path(), "/accounts/stepup-sample/transfers");
        let schema = post.body_schema.as_ref().unwrap();
        assert_eq!(spec.body_has(schema, "/amount"), Some(true));
        assert_eq!(spec.body_has(schema, "/to"), Some(true));
        assert_eq!(spec.body_has(schema, "/lines/0/currency"), Some(true));
        assert_eq!(spec.body_has(schema, "/sum"), Some(false));
        assert_eq!(spec.body_has(schema, "/lines/0/sum"), Some(false));
        assert!(!spec.operations[1].changes_state());
        assert!(spec.operations[1].body_schema.is_none());
    }

    #[test]
    fn not_openapi_3_is_refused_with_its_place() {
        let e = ApiSpec::parse("swagger: '2.0'\npaths: {}\n").unwrap_err();
        assert!(e.message.contains("OpenAPI 3.x"), "{e}");
        let e = ApiSpec::parse("openapi: 2.0\n").unwrap_err();
        assert_eq!(e.at, Position { line: 1, column: 10 });
        let e = ApiSpec::parse("openapi: 3.1.0\npaths:\n  accounts: {}\n").unwrap_err();
        assert_eq!(e.at.line, 3);
    }
}
